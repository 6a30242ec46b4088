"""SBOMs of an image (or a layer stack): CycloneDX 1.6 JSON through cyclonedx-python-lib, SPDX
2.3 JSON through ``tophan.scan.spdx``, both from the merged inventory.

Every component carries its purl (packageurl-python, ``Package.purl``) and the digest of the
layer it came from, named as Syft and Trivy name theirs but in our own namespace
(``tophan:layer:digest``, like ``aquasecurity:trivy:LayerDigest``); the layer digest is the
layer's DiffID (what ``tophan layer list`` shows). The image is the document's subject
(CycloneDX's metadata component, SPDX's described package) with its manifest digest.

Reproducible: the same image gives the same bytes but for the creation time, which is
``$SOURCE_DATE_EPOCH`` when set, and the serial number / document namespace, which are derived
from the content *and* that time (CycloneDX asks that a BOM made at another time get another
serial; with ``$SOURCE_DATE_EPOCH`` both are fixed).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from tophan import __version__
from tophan.errors import UsageError
from tophan.scan.model import APK, DEB, NPM

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from cyclonedx.model import Property
    from cyclonedx.model.component import Component

    from tophan._internal.root import StoreRoot
    from tophan.scan.inventory import ImageInventory
    from tophan.scan.model import Package
    from tophan.scan.targets import Target

CYCLONEDX, SPDX = "cyclonedx", "spdx"
FORMATS = (CYCLONEDX, SPDX)
TOOL = "tophan"
# Property (CycloneDX) and annotation (SPDX) names, in the ``tool:area:key`` form Syft uses.
LAYER_DIGEST = "tophan:layer:digest"
PACKAGE_PATH = "tophan:package:path"
SOURCE_NAME = "tophan:package:sourceName"
SOURCE_VERSION = "tophan:package:sourceVersion"
ECOSYSTEM = "tophan:package:ecosystem"
IMAGE_LAYER = "tophan:image:layer:"  # + index, bottom = 0: a property per layer of the subject
# Fixed so that serial numbers are a function of the content only (uuid5 under it).
_NAMESPACE = uuid.UUID("6f1d3c2e-5b7a-4c19-9e0d-2a8f4b6c7d10")


@dataclass(frozen=True, slots=True)
class Entry:
    """One component: its package, purl, and the reference other parts of the document use
    (the purl, made unique with the file it was read from when two share one)."""

    package: Package
    purl: str
    ref: str


@dataclass(frozen=True, slots=True)
class Document:
    """What either format is written from."""

    name: str
    digest: str | None  # the image's manifest digest; None for bare layers
    layers: list[str]  # layer digests, bottom to top
    entries: list[Entry]
    created: int  # seconds since the epoch
    serial: uuid.UUID


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"sbom: unknown --format {fmt!r}", f"use {' or '.join(FORMATS)}")
    return fmt


def creation_time(environ: Mapping[str, str] | None = None) -> int:
    """``$SOURCE_DATE_EPOCH`` (reproducible-builds.org's rule: malformed is an error), else now."""
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return int(time.time())
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise UsageError(
            f"SOURCE_DATE_EPOCH is not a number of seconds: {raw!r}",
            "set it to a Unix time such as $(git log -1 --format=%ct), or unset it",
        )
    return int(raw)


def iso(seconds: int) -> str:
    """UTC, to the second, as SPDX requires (``2024-01-31T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def entries(packages: list[Package]) -> list[Entry]:
    """The components, in the inventory's (sorted) order; a package listed twice in the same
    file under the same purl is one component."""
    unique: list[tuple[Package, str]] = []
    seen: set[tuple[str, str]] = set()
    for p in packages:
        purl = p.purl
        if (purl, p.path) not in seen:
            seen.add((purl, p.path))
            unique.append((p, purl))
    counts = Counter(purl for _, purl in unique)
    # The same package at two places (nested node_modules, two virtualenvs): both are
    # components, told apart by the file each was read from.
    return [Entry(p, u, f"{u}|{p.path}" if counts[u] > 1 else u) for p, u in unique]


def document(target: Target, inventory: ImageInventory, created: int, fmt: str) -> Document:
    items = entries(inventory.packages)
    h = hashlib.sha256(f"{fmt}\n{target.name}\n{target.digest or ''}\n".encode())
    for digest, _ in target.stack:
        h.update(f"layer {digest}\n".encode())
    for e in items:
        h.update(f"{e.ref}\t{e.package.layer}\n".encode())
    h.update(f"created {created}\n".encode())
    serial = uuid.uuid5(_NAMESPACE, h.hexdigest())
    layers = [d for d, _ in target.stack]
    return Document(target.name, target.digest, layers, items, created, serial)


def properties(p: Package) -> list[tuple[str, str]]:
    """A component's (name, value) properties: where it came from, what advisories call it."""
    out = [(LAYER_DIGEST, p.layer), (PACKAGE_PATH, p.path)]
    if p.type in (DEB, APK) and p.source and p.source != p.name:
        out.append((SOURCE_NAME, p.source))
    if p.type in (DEB, APK) and p.source_version and p.source_version != p.version:
        out.append((SOURCE_VERSION, p.source_version))
    if p.ecosystem:
        out.append((ECOSYSTEM, p.ecosystem))
    return out


def subject_purl(doc: Document) -> str | None:
    """The image as a purl (``pkg:oci/NAME@sha256:…?repository_url=…&tag=…``), if it has a
    manifest digest."""
    if not doc.digest:
        return None
    from packageurl import PackageURL

    from tophan.image.spec import parse_reference

    ref = parse_reference(doc.name, what="image name")
    quals = {}
    if ref.domain:
        quals["repository_url"] = ref.repository
    if ref.tag:
        quals["tag"] = ref.tag
    name = ref.path.rsplit("/", 1)[-1].lower()
    purl = PackageURL(type="oci", name=name, version=doc.digest, qualifiers=quals or None)
    return str(purl.to_string())


def npm_group(p: Package) -> tuple[str | None, str]:
    """(group, name): an npm scope is CycloneDX's group, as cyclonedx-node-npm writes it."""
    if p.type == NPM and p.name.startswith("@") and "/" in p.name:
        scope, name = p.name.split("/", 1)
        return scope, name
    return None, p.name


def render(doc: Document, fmt: str) -> bytes:
    if check_format(fmt) == CYCLONEDX:
        return cyclonedx(doc)
    from tophan.scan import spdx

    return spdx.render(doc)


def cyclonedx(doc: Document) -> bytes:
    """CycloneDX 1.6 JSON."""
    from datetime import UTC, datetime

    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.output.json import JsonV1Dot6

    bom = Bom(serial_number=doc.serial)
    bom.metadata.timestamp = datetime.fromtimestamp(doc.created, UTC)
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name=TOOL, version=__version__)
    )
    root = _subject_component(doc)
    bom.metadata.component = root
    components = [_component(e) for e in doc.entries]
    for c in components:
        bom.components.add(c)
    # The image holds every package: one edge each, so that the graph is complete (the library
    # warns of a subject without dependencies); no claim about package-to-package edges. Added
    # directly: ``register_dependency`` scans every entry per call, O(n²) on a 900-package host.
    edges = [Dependency(ref=c.bom_ref) for c in components]
    bom.dependencies.add(Dependency(ref=root.bom_ref, dependencies=edges))
    return (JsonV1Dot6(bom).output_as_string(indent=2) + "\n").encode()


def _cdx_properties(pairs: list[tuple[str, str]]) -> list[Property]:
    from cyclonedx.model import Property

    return [Property(name=k, value=v) for k, v in pairs if v]


def _subject_component(doc: Document) -> Component:
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    purl = subject_purl(doc)
    hashes = []
    if doc.digest and doc.digest.startswith("sha256:"):
        hashes.append(HashType(alg=HashAlgorithm.SHA_256, content=doc.digest.split(":", 1)[1]))
    layers = [(f"{IMAGE_LAYER}{i}", d) for i, d in enumerate(doc.layers)]
    return Component(
        type=ComponentType.CONTAINER,
        name=doc.name,
        version=doc.digest or None,
        bom_ref=purl or f"tophan:layers:{doc.serial}",
        purl=PackageURL.from_string(purl) if purl else None,
        hashes=hashes,
        properties=_cdx_properties(layers),
    )


def _component(e: Entry) -> Component:
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    group, name = npm_group(e.package)
    return Component(
        type=ComponentType.LIBRARY,
        group=group,
        name=name,
        version=e.package.version,
        purl=PackageURL.from_string(e.purl),
        bom_ref=e.ref,
        properties=_cdx_properties(properties(e.package)),
    )


def generate(
    store: StoreRoot, target: Target, fmt: str = CYCLONEDX, *, created: int | None = None
) -> tuple[bytes, list[str]]:
    """``target``'s SBOM in ``fmt``, and the inventory's warnings (files it skipped).
    ``created``: seconds since the epoch, else ``creation_time()``."""
    from tophan.scan.inventory import Inventories

    check_format(fmt)
    when = creation_time() if created is None else created
    inventory = Inventories(store).image(target.stack)
    return render(document(target, inventory, when, fmt), fmt), inventory.warnings
