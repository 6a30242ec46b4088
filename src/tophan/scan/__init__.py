"""Security scanning: package inventories per layer (cached by digest), OSV vulnerability
matching, SBOMs, the vulnerability database and the last scan's results.

Modules: ``model`` (``Package``), ``dpkg``/``apk``/``pythonpkg``/``npm``/``osrelease`` (the
readers), ``inventory`` (per layer, cached; merged per image with overlayfs's rules),
``versions`` (each ecosystem's ordering), ``osv`` (records and databases), ``match`` (OSV's
evaluation, severities), ``targets`` (images and layers to scan).

Its libraries (python-debian, packaging, semver, cvss, PyYAML, cyclonedx, packageurl) are
imported by the functions that need them: no other command pays for them.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = ["Database", "Finding", "ImageInventory", "Inventories", "Package"]

_LAZY = {
    "Database": "tophan.scan.osv",
    "Finding": "tophan.scan.match",
    "ImageInventory": "tophan.scan.inventory",
    "Inventories": "tophan.scan.inventory",
    "Package": "tophan.scan.model",
}

if TYPE_CHECKING:
    from tophan.scan.inventory import ImageInventory, Inventories
    from tophan.scan.match import Finding
    from tophan.scan.model import Package
    from tophan.scan.osv import Database


__getattr__ = exports(__name__, _LAZY)
