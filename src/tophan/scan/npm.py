"""npm packages: ``node_modules/NAME/package.json`` and ``node_modules/@SCOPE/NAME/package.json``,
nested at any depth. A package marked private without a version is an application, not a
dependency anyone could publish an advisory for: skipped."""

from __future__ import annotations

import json

from tophan.scan.model import NPM, Package


def read(text: str, path: str) -> list[Package]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return []  # not JSON (or absurdly nested): not a package we can name
    if not isinstance(doc, dict):
        return []
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not name or len(name) > 214:  # npm's own name limit
        return []
    if not isinstance(version, str) or not version:
        return []
    return [Package(type=NPM, name=name, version=version, path=path)]


def is_manifest(comps: tuple[str, ...]) -> bool:
    """Whether the path (components) is a package's manifest under ``node_modules``."""
    if len(comps) >= 3 and comps[-1] == "package.json":
        if comps[-3] == "node_modules" and not comps[-2].startswith("."):
            return True
        return len(comps) >= 4 and comps[-4] == "node_modules" and comps[-3].startswith("@")
    return False
