"""Building images from a Containerfile (Dockerfile): ``tophan build``."""

from __future__ import annotations
