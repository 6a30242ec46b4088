"""Building images from a Containerfile: the builder, its layer stack view and COPY/ADD."""

from __future__ import annotations
