"""Kept for the packages that still import it: ``exports`` lives in ``tophan._internal``."""

from __future__ import annotations

from tophan._internal import exports as exports
