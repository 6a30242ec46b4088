"""SPDX 2.3 JSON, written from the specification (spdx.github.io/spdx-spec/v2.3): spdx-tools
would pull rdflib, ply, beartype, click and more into the one command that needs ~100 lines.

The document describes one package, the image (``SPDXRef-Image``, purpose CONTAINER, its
manifest digest as version and checksum), which CONTAINS one package per component. Each
component has its purl as a PACKAGE-MANAGER external reference, where it was read in
``sourceInfo``, and its layer digest as an annotation ``tophan:layer:digest=sha256:…`` (the
CycloneDX property's name; Trivy annotates its SPDX packages the same way). SPDXIDs are derived
from the content, so the same image gives the same identifiers.
"""

from __future__ import annotations

import hashlib
import json
import re

from tophan import __version__
from tophan.scan import sbom

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan.scan.sbom import Document, Entry

VERSION = "SPDX-2.3"
DOCUMENT = "SPDXRef-DOCUMENT"
SUBJECT = "SPDXRef-Image"
NOASSERTION = "NOASSERTION"
# Where document namespaces live: the form the specification's own examples use.
NAMESPACE_BASE = "https://spdx.org/spdxdocs/tophan/"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def creator() -> str:
    return f"Tool: {sbom.TOOL}-{__version__}"


def spdx_id(e: Entry) -> str:
    """``SPDXRef-Package-<type>-<name>-<hash>``: letters, digits, '.' and '-' only (the rule for
    SPDX identifiers), unique by the hash of the component's reference and layer."""
    h = hashlib.sha256(f"{e.ref}\0{e.package.layer}".encode()).hexdigest()[:16]
    name = _ID_UNSAFE.sub("-", e.package.name).strip("-") or "package"
    return f"SPDXRef-Package-{e.package.type}-{name}-{h}"


def namespace(doc: Document) -> str:
    name = _ID_UNSAFE.sub("-", doc.name).strip("-") or "layers"
    return f"{NAMESPACE_BASE}{name}-{doc.serial}"


def _annotation(comment: str, date: str) -> dict[str, str]:
    return {
        "annotationDate": date,
        "annotationType": "OTHER",
        "annotator": creator(),
        "comment": comment,
    }


def subject(doc: Document, date: str) -> dict[str, Any]:
    pkg: dict[str, Any] = {
        "SPDXID": SUBJECT,
        "name": doc.name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
    }
    if doc.digest:
        pkg["versionInfo"] = doc.digest
        algo, _, hexdigest = doc.digest.partition(":")
        if algo == "sha256":
            pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": hexdigest}]
    purl = sbom.subject_purl(doc)
    if purl:
        pkg["externalRefs"] = [_purl_ref(purl)]
    layers = [f"{sbom.IMAGE_LAYER}{i}={d}" for i, d in enumerate(doc.layers)]
    if layers:
        pkg["annotations"] = [_annotation(text, date) for text in layers]
    return pkg


def _purl_ref(purl: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    }


def package(e: Entry, date: str) -> dict[str, Any]:
    p = e.package
    pkg: dict[str, Any] = {
        "SPDXID": spdx_id(e),
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "sourceInfo": f"acquired package info from {p.path} in layer {p.layer}",
        "externalRefs": [_purl_ref(e.purl)],
        "annotations": [_annotation(f"{k}={v}", date) for k, v in sbom.properties(p) if v],
    }
    return pkg


def render(doc: Document) -> bytes:
    """The SPDX 2.3 JSON document of ``doc``."""
    date = sbom.iso(doc.created)
    packages = [subject(doc, date)]
    relationships = [_rel(DOCUMENT, "DESCRIBES", SUBJECT)]
    seen: set[str] = set()
    for e in doc.entries:
        pkg = package(e, date)
        if pkg["SPDXID"] in seen:
            continue  # the very same component twice (same reference, same layer)
        seen.add(pkg["SPDXID"])
        packages.append(pkg)
        relationships.append(_rel(SUBJECT, "CONTAINS", pkg["SPDXID"]))
    out = {
        "spdxVersion": VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT,
        "name": doc.name,
        "documentNamespace": namespace(doc),
        "creationInfo": {"created": date, "creators": [creator()]},
        "packages": packages,
        "relationships": relationships,
    }
    return (json.dumps(out, indent=2, ensure_ascii=False) + "\n").encode()


def _rel(a: str, kind: str, b: str) -> dict[str, str]:
    return {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}
