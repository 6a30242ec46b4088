"""Images in and out of files: OCI image layouts, ``oci-archive`` and ``docker-archive`` tars.

Sources and destinations are written as skopeo/podman write them: ``oci:DIR[:REF]``,
``oci-archive:FILE[:REF]``, ``docker-archive:FILE[:REF]``; a plain path is recognised by content
(a directory with ``oci-layout``; a tar holding ``oci-layout`` + ``index.json``, or Docker's
``manifest.json``). ``-`` is stdin/stdout for archives.

Import reads each blob once, verifying it against its digest (and each layer against the config's
DiffID) as it streams, unpacks layers the store does not have, and publishes every selected image
in one transaction. Export writes the same bytes for the same images every time: blobs as stored,
entries sorted, tar headers without times or owners.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tarfile
from dataclasses import dataclass

from tophan.errors import ArchiveError, IntegrityError, NotFound, TophanError, UsageError
from tophan.image.blobs import (
    CHUNK,
    MAX_DOCUMENT,
    VerifyingReader,
    check_digest,
    digest_of,
    dumps,
    loads,
)
from tophan.image.images import Image, Images, Transaction
from tophan.image.spec import (
    CONTAINERD_NAME,
    IMAGE_CONFIGS,
    INDEXES,
    MANIFESTS,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    Platform,
    config_diff_ids,
    is_index,
    json_list,
    normalize_name,
    oci_layer_type,
    parse_manifest,
    parse_reference,
    select_platform,
)
from tophan.layer.layers import Layers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, Any

    from tophan._internal.root import StoreRoot

FORMATS = ("oci", "oci-archive", "docker-archive")
LAYOUT_VERSION = "1.0.0"


@dataclass(frozen=True)
class Location:
    """A parsed ``[transport:]path[:ref]``."""

    format: str | None  # None: recognise by content
    path: str
    ref: str | None = None


def parse_location(text: str, default_format: str | None = None) -> Location:
    for fmt in FORMATS:
        prefix = fmt + ":"
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            # The first ':' after the path starts the reference, as in containers/image.
            path, sep, ref = rest.partition(":")
            if not path:
                raise UsageError(f"{text!r}: missing path", f"use {fmt}:PATH[:REF]")
            return Location(fmt, path, ref if sep and ref else None)
    return Location(default_format, text)


def _is_tag_only(name: str) -> bool:
    return "/" not in name and ":" not in name and "@" not in name


def _name_matches(candidate: str, wanted: str) -> bool:
    if candidate == wanted:
        return True
    try:
        return normalize_name(candidate) == normalize_name(wanted)
    except UsageError:
        return False


# -- reading sources --------------------------------------------------------------------------


class _Source:
    """Files of a layout directory or archive, by relative path."""

    label = ""

    def open(self, rel: str) -> IO[bytes]:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def size(self, rel: str) -> int:
        raise NotImplementedError

    def read_small(self, rel: str, what: str) -> bytes:
        if self.size(rel) > MAX_DOCUMENT:
            raise ArchiveError(f"{self.label}: {what} is absurdly large")
        with self.open(rel) as f:
            return f.read()

    def close(self) -> None:
        pass

    @property
    def parallel(self) -> bool:
        return False


class _DirSource(_Source):
    def __init__(self, root: str) -> None:
        self.root = root
        self.label = root

    def _path(self, rel: str) -> str:
        norm = posixpath.normpath(rel)
        if norm.startswith("../") or norm == ".." or norm.startswith("/"):
            raise ArchiveError(f"{self.label}: path {rel!r} leaves the layout")
        return os.path.join(self.root, norm)

    def open(self, rel: str) -> IO[bytes]:
        try:
            return open(self._path(rel), "rb", buffering=CHUNK)
        except FileNotFoundError:
            raise NotFound(f"{self.label}: {rel} is missing", "the layout is incomplete") from None

    def exists(self, rel: str) -> bool:
        return os.path.isfile(self._path(rel))

    def size(self, rel: str) -> int:
        try:
            return os.stat(self._path(rel)).st_size
        except FileNotFoundError:
            raise NotFound(f"{self.label}: {rel} is missing", "the layout is incomplete") from None

    @property
    def parallel(self) -> bool:
        return True


class _TarSource(_Source):
    """A seekable tar: members are read in place (tarfile seeks over the data)."""

    def __init__(self, path: str, label: str) -> None:
        self.label = label
        try:
            self.tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
            members = self.tf.getmembers()
        except (OSError, tarfile.TarError) as e:
            raise ArchiveError(f"{label}: not a readable tar archive ({e})") from e
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in members:
            self.members[posixpath.normpath(m.name.lstrip("/"))] = m

    def _member(self, rel: str) -> tarfile.TarInfo:
        name = posixpath.normpath(rel)
        for _ in range(16):  # docker-archive layers may be symlinks to other members
            m = self.members.get(name)
            if m is None:
                raise NotFound(f"{self.label}: {rel} is missing", "the archive is incomplete")
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = posixpath.normpath(m.linkname)
            elif m.isfile():
                return m
            else:
                raise ArchiveError(f"{self.label}: {rel} is not a file")
        raise ArchiveError(f"{self.label}: {rel}: too many symlinks")

    def open(self, rel: str) -> IO[bytes]:
        f = self.tf.extractfile(self._member(rel))
        assert f is not None
        return f

    def exists(self, rel: str) -> bool:
        try:
            self._member(rel)
        except TophanError:
            return False
        return True

    def size(self, rel: str) -> int:
        return self._member(rel).size

    def close(self) -> None:
        self.tf.close()


def _blob_rel(digest: str) -> str:
    alg, _, hexd = check_digest(digest).partition(":")
    return f"blobs/{alg}/{hexd}"


@contextlib.contextmanager
def _open_source(store: StoreRoot, loc: Location) -> Iterator[tuple[_Source, str]]:
    """The source and its format. Stdin and compressed archives are spooled to the store's
    tmp first (a tar must be seekable to be read in place)."""
    staging = None
    try:
        path = loc.path
        if path == "-" or not os.path.isdir(path):
            if path != "-" and not os.path.exists(path):
                raise NotFound(f"no such file or directory: {path}")
            path, staging = _seekable_tar(store, path)
            src: _Source = _TarSource(path, loc.path)
        else:
            src = _DirSource(path)
        try:
            fmt = loc.format or _detect(src)
            if fmt == "oci" and isinstance(src, _TarSource):
                fmt = "oci-archive"
            if fmt == "oci-archive" and isinstance(src, _DirSource):
                fmt = "oci"
            yield src, fmt
        finally:
            src.close()
    finally:
        if staging is not None:
            staging.discard()


def _seekable_tar(store: StoreRoot, path: str) -> tuple[str, Any]:
    import sys

    from tophan._internal.compression import detect, open_decompressed

    if path != "-":
        with open(path, "rb") as f:
            head = f.read(6)
        if detect(head) is None:
            return path, None
    staging = store.staging("archive")
    out = os.path.join(staging.path, "archive.tar")
    try:
        src: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        with src, open(out, "wb") as f:
            shutil.copyfileobj(open_decompressed(src), f, CHUNK)
    except BaseException:
        staging.discard()
        raise
    return out, staging


def _detect(src: _Source) -> str:
    if src.exists("oci-layout") and src.exists("index.json"):
        return "oci" if isinstance(src, _DirSource) else "oci-archive"
    if src.exists("manifest.json"):
        return "docker-archive"
    raise ArchiveError(
        f"{src.label}: neither an OCI layout (oci-layout, index.json) nor a docker-archive"
        " (manifest.json)",
        "pass a layout dir, an oci-archive or a docker-archive",
    )


# -- import -----------------------------------------------------------------------------------


def import_images(
    store: StoreRoot,
    source: str,
    name: str | None = None,
    *,
    fmt: str | None = None,
    ref: str | None = None,
    platform: Platform | None = None,
    compression: str | None = "gzip",
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Import the images of a layout or archive; returns the names stored.

    ``ref`` picks one image (by its name or tag in the archive); without it every image is
    imported under the names the archive gives. ``name`` stores the (single) selected image
    under that name instead. An index/manifest list yields the ``platform`` entry (default: this
    host's). ``compression`` applies to docker-archive layers, which are plain tars."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    loc = parse_location(source, fmt)
    if ref is None:
        ref = loc.ref
    wanted = platform or Platform.host()
    with _open_source(store, loc) as (src, kind), Images(store).transaction() as tx:
        if kind == "docker-archive":
            stored = _import_docker(store, tx, src, name, ref, compression, progress)
        else:
            stored = _import_oci(store, tx, src, name, ref, wanted, progress)
        tx.commit()
    return stored


def _final_names(
    selected: list[Any], name: str | None, label: str, describe: Callable[[Any], str]
) -> list[list[str]]:
    if name is not None:
        if len(selected) != 1:
            listed = ", ".join(describe(s) for s in selected[:8])
            raise UsageError(
                f"{label} holds {len(selected)} images ({listed}); NAME fits only one",
                "pick one with --ref, or import all without NAME",
            )
        return [[normalize_name(name)]]
    out = []
    for s in selected:
        if not s.names:
            raise UsageError(
                f"{label}: image {describe(s)} has no name in the archive", "give a NAME for it"
            )
        out.append(s.names)
    return out


@dataclass
class _OciEntry:
    names: list[str]
    refname: str
    desc: Descriptor


def _import_oci(
    store: StoreRoot,
    tx: Transaction,
    src: _Source,
    name: str | None,
    ref: str | None,
    platform: Platform,
    progress: Callable[[str], None] | None,
) -> list[str]:
    layout = loads(src.read_small("oci-layout", "oci-layout"), f"{src.label}: oci-layout")
    version = str(layout.get("imageLayoutVersion", ""))
    if not version.startswith("1."):
        raise ArchiveError(f"{src.label}: unsupported imageLayoutVersion {version!r}")
    index = loads(src.read_small("index.json", "index.json"), f"{src.label}: index.json")
    entries = [
        Descriptor.parse(m, f"{src.label}: index.json entry {i}")
        for i, m in enumerate(json_list(index, "manifests", f"{src.label}: index.json"))
    ]
    # cosign/skopeo lay an image's signatures out as a manifest named sha256-H.sig: imported
    # as attached to the image they sign, never as an image.
    attachments = [d for d in entries if _attachment_tag(d)]
    entries = [d for d in entries if not _attachment_tag(d)]
    if not entries:
        raise ArchiveError(f"{src.label}: index.json lists no images")
    # Entries sharing a ref name are one image for several platforms.
    groups: dict[str, list[Descriptor]] = {}
    for d in entries:
        refname = d.annotations.get(REF_NAME) or d.annotations.get(CONTAINERD_NAME) or ""
        groups.setdefault(refname, []).append(d)
    if ref is not None:
        matching = {
            k: v
            for k, v in groups.items()
            if k and (k == ref or _name_matches(k, ref) or k.rsplit(":", 1)[-1] == ref)
        }
        if not matching:
            have = ", ".join(sorted(k for k in groups if k)) or "none"
            raise NotFound(f"{src.label}: no image named {ref!r}", f"names in it: {have}")
        groups = matching
    selected = []
    for refname, descs in groups.items():
        names = []
        if refname and not _is_tag_only(refname):
            names = [normalize_name(refname)]
        if len(descs) == 1 and descs[0].media_type in MANIFESTS:
            chosen = descs[0]
        elif len(descs) == 1 and descs[0].media_type in INDEXES:
            chosen = _from_index(src, descs[0], platform)
        else:
            chosen = select_platform(descs, platform, f"{src.label} {refname}".strip())
            if chosen.media_type in INDEXES:
                chosen = _from_index(src, chosen, platform)
        selected.append(_OciEntry(names, refname, chosen))
    final = _final_names(selected, name, src.label, lambda s: s.refname or s.desc.digest[:19])
    stored: list[str] = []
    for entry, names in zip(selected, final, strict=True):
        _import_oci_image(store, tx, src, entry.desc, progress)
        label = f"imported from {src.label}"
        for n in names:
            tx.set_ref(n, entry.desc.digest, source=label)
            stored.append(n)
    imported = {entry.desc.digest for entry in selected}
    for d in attachments:
        tag = _attachment_tag(d)
        if tag[:-4].replace("-", ":", 1) in imported:
            _import_attachment(tx, src, d, tag)
    return stored


# An attachment is small (a cosign signature manifest: ~1 KiB per signature, payloads ~250 B);
# a hostile archive must not make us hold more than this of it in memory.
_MAX_ATTACHED_BLOB = 1 << 20
_MAX_ATTACHED_BLOBS = 257


def _attachment_tag(d: Descriptor) -> str:
    """``sha256-H.sig`` when the index entry is an image's signature manifest, else ""."""
    tag = d.annotations.get(REF_NAME) or ""
    algo, _, rest = tag.partition("-")
    hexpart = rest.removesuffix(".sig")
    if algo != "sha256" or not rest.endswith(".sig") or len(hexpart) != 64:
        return ""
    if any(c not in "0123456789abcdef" for c in hexpart) or d.media_type != OCI_MANIFEST:
        return ""
    return tag


def _import_attachment(tx: Transaction, src: _Source, d: Descriptor, tag: str) -> None:
    """Stage the attachment ``d`` (its manifest, config and layer blobs, each checked against
    its digest) to the image its tag names."""
    what = f"attached manifest {tag}"
    if d.size > _MAX_ATTACHED_BLOB:
        raise ArchiveError(f"{src.label}: {what} is {d.size} bytes", "not a signature manifest")
    data = _read_blob(src, d, what)
    doc = loads(data, f"{src.label}: {what}")
    descs = [doc.get("config"), *json_list(doc, "layers", f"{src.label}: {what}")]
    if len(descs) > _MAX_ATTACHED_BLOBS:
        raise ArchiveError(f"{src.label}: {what} lists {len(descs)} blobs", "not plausible")
    blobs = []
    for i, raw in enumerate(descs):
        blob = Descriptor.parse(raw, f"{src.label}: {what} blob {i}")
        if blob.size > _MAX_ATTACHED_BLOB:
            raise ArchiveError(f"{src.label}: {what}: blob {blob.digest} is {blob.size} bytes")
        blobs.append(_read_blob(src, blob, what))
    tx.attach(tag[:-4].replace("-", ":", 1), tag, data, blobs)


def _from_index(src: _Source, desc: Descriptor, platform: Platform) -> Descriptor:
    for _ in range(8):
        doc = _read_doc(src, desc, "index")
        if not is_index(doc, desc.media_type):
            return desc
        entries = [
            Descriptor.parse(m, f"{src.label}: index {desc.digest} entry {i}")
            for i, m in enumerate(json_list(doc, "manifests", f"{src.label}: {desc.digest}"))
        ]
        desc = select_platform(entries, platform, f"{src.label}: index {desc.digest}")
        if desc.media_type in MANIFESTS:
            return desc
    raise ArchiveError(f"{src.label}: indexes nested too deeply")


def _read_doc(src: _Source, desc: Descriptor, what: str) -> dict[str, Any]:
    return loads(_read_blob(src, desc, what), f"{src.label}: {what} {desc.digest}")


def _read_blob(src: _Source, desc: Descriptor, what: str) -> bytes:
    from tophan.image.blobs import read_verified

    rel = _blob_rel(desc.digest)
    with src.open(rel) as f:
        return read_verified(f, desc.digest, desc.size, f"{src.label}: {what} {desc.digest}")


def _import_oci_image(
    store: StoreRoot,
    tx: Transaction,
    src: _Source,
    desc: Descriptor,
    progress: Callable[[str], None] | None,
) -> None:
    data = _read_blob(src, desc, "manifest")
    what = f"{src.label}: image {desc.digest[:19]}"
    manifest = parse_manifest(loads(data, what), desc.media_type, what)
    config = Descriptor.parse(manifest["config"], f"{what}: config")
    if config.media_type not in IMAGE_CONFIGS:
        raise UsageError(f"{what} is an artifact ({config.media_type}), not a container image")
    config_bytes = _read_blob(src, config, "config")
    raw_config = loads(config_bytes, f"{what}: config")
    layers = [Descriptor.parse(d, f"{what}: layer {i}") for i, d in enumerate(manifest["layers"])]
    diff_ids = config_diff_ids(raw_config, len(layers), what)
    tx.add_bytes(config_bytes, config.digest)
    tx.add_bytes(data, desc.digest)

    def one(d: Descriptor, diff_id: str) -> None:
        if tx.has_blob(d.digest) and tx.tree_for(diff_id):
            return  # already in the store: not read, not stored twice
        if progress is not None:
            progress(f"layer {d.digest[:19]}")
        with src.open(_blob_rel(d.digest)) as f:
            tx.ingest_layer(
                f, digest=d.digest, size=d.size, diff_id=diff_id, what=f"{what}: layer {d.digest}"
            )

    pairs = list(
        {d.digest: (d, diff_id) for d, diff_id in zip(layers, diff_ids, strict=True)}.values()
    )
    if src.parallel and len(pairs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(4, len(pairs))) as pool:
            for f in [pool.submit(one, d, i) for d, i in pairs]:
                f.result()
    else:
        for d, i in pairs:
            one(d, i)


@dataclass
class _DockerEntry:
    names: list[str]
    config: str
    layers: list[str]


def _import_docker(
    store: StoreRoot,
    tx: Transaction,
    src: _Source,
    name: str | None,
    ref: str | None,
    compression: str | None,
    progress: Callable[[str], None] | None,
) -> list[str]:
    raw = src.read_small("manifest.json", "manifest.json")
    try:
        import json

        doc = json.loads(raw)
    except ValueError as e:
        raise ArchiveError(f"{src.label}: manifest.json is not JSON: {e}") from e
    if not isinstance(doc, list) or not doc:
        raise ArchiveError(f"{src.label}: manifest.json lists no images")
    entries = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ArchiveError(f"{src.label}: manifest.json entry {i} has no Config")
        layers = item.get("Layers")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError(f"{src.label}: manifest.json entry {i} has no Layers list")
        tags = [t for t in item.get("RepoTags") or [] if isinstance(t, str)]
        names = []
        for t in tags:
            try:
                names.append(normalize_name(t))
            except UsageError:
                continue
        entries.append(_DockerEntry(names, item["Config"], list(layers)))
    if ref is not None:
        entries = [e for e in entries if any(_name_matches(n, ref) for n in e.names)]
        if not entries:
            raise NotFound(f"{src.label}: no image named {ref!r}")
    final = _final_names(entries, name, src.label, lambda e: ",".join(e.names) or e.config)
    known = Images(store).known_blobs()
    stored = []
    for entry, names in zip(entries, final, strict=True):
        config_bytes = src.read_small(entry.config, "config")
        what = f"{src.label}: image {entry.config}"
        config_digest = digest_of(config_bytes)
        base = posixpath.basename(entry.config).removesuffix(".json")
        # Docker names the config by its digest (the image ID): hold it to that.
        hexname = len(base) == 64 and all(c in "0123456789abcdef" for c in base)
        if hexname and config_digest != f"sha256:{base}":
            raise IntegrityError(f"{what} does not match its name ({config_digest})")
        raw_config = loads(config_bytes, f"{what}: config")
        diff_ids = config_diff_ids(raw_config, len(entry.layers), what)
        layer_descs = []
        for rel, diff_id in zip(entry.layers, diff_ids, strict=True):
            layer_descs.append(
                _docker_layer(store, tx, src, rel, diff_id, compression, known, what, progress)
            )
        tx.add_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": layer_descs,
        }
        manifest_digest = tx.add_bytes(dumps(manifest))
        for n in names:
            tx.set_ref(n, manifest_digest, source=f"imported from {src.label}")
            stored.append(n)
    return stored


def _docker_layer(
    store: StoreRoot,
    tx: Transaction,
    src: _Source,
    rel: str,
    diff_id: str,
    compression: str | None,
    known: dict[tuple[str, str | None], Any],
    what: str,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    layer = tx.tree_for(diff_id)
    if layer is not None:
        hit = known.get((layer, compression))
        if hit is not None and hit.diff_id == diff_id:
            return {"mediaType": hit.media_type, "digest": hit.blob, "size": hit.blob_size}
    if progress is not None:
        progress(f"layer {rel}")
    with src.open(rel) as f:
        staged = tx.ingest_layer(
            f, diff_id=diff_id, size=None, compress=compression, what=f"{what}: layer {rel}"
        )
    known[(staged.digest, compression)] = _KnownBlob(
        staged.blob, staged.blob_size, staged.media_type, staged.diff_id
    )
    return {"mediaType": staged.media_type, "digest": staged.blob, "size": staged.blob_size}


@dataclass
class _KnownBlob:
    blob: str
    blob_size: int
    media_type: str
    diff_id: str


# -- export -----------------------------------------------------------------------------------


class _TarWriter:
    """A deterministic tar: no times, owners or user names; directories before their files."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def _header(self, name: str, size: int, kind: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def add_dir(self, name: str) -> None:
        self._header(name.rstrip("/") + "/", 0, tarfile.DIRTYPE)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data), tarfile.REGTYPE)
        self.out.write(data)
        self._pad(len(data))

    def add_stream(self, name: str, size: int, src: IO[bytes]) -> None:
        self._header(name, size, tarfile.REGTYPE)
        left = size
        while left:
            chunk = src.read(min(CHUNK, left))
            if not chunk:
                raise IntegrityError(f"{name}: ended {left} bytes early")
            self.out.write(chunk)
            left -= len(chunk)
        self._pad(size)

    def _pad(self, size: int) -> None:
        if size % 512:
            self.out.write(b"\0" * (512 - size % 512))

    def close(self) -> None:
        self.out.write(b"\0" * 1024)


def _as_oci(image: Image) -> tuple[bytes, str]:
    """The image's manifest for an OCI layout: as stored when it is OCI, else converted (Docker
    schema 2 -> OCI: same config and layer blobs, OCI media types)."""
    from tophan.image.spec import layer_compression

    data = Images(image.store).blobs.read(image.digest, "manifest")
    if image.media_type == OCI_MANIFEST:
        return data, image.digest
    manifest = dict(image.manifest)
    manifest["mediaType"] = OCI_MANIFEST
    manifest["config"] = {**manifest["config"], "mediaType": OCI_CONFIG}
    manifest["layers"] = [
        {**d, "mediaType": oci_layer_type(layer_compression(d["mediaType"]))}
        for d in manifest["layers"]
    ]
    converted = dumps(manifest)
    return converted, digest_of(converted)


def export_images(
    store: StoreRoot,
    names: list[str],
    destination: str,
    *,
    fmt: str | None = None,
) -> str:
    """Write images to ``destination`` (a layout dir, an archive file, or ``-``). Returns the
    format written. An existing OCI layout directory gets the images added (same-named entries
    are replaced); anything else is written to a temporary name and renamed into place."""
    loc = parse_location(destination, fmt)
    kind = loc.format or ("oci-archive" if not os.path.isdir(loc.path) else "oci")
    if kind not in FORMATS:
        raise UsageError(f"unknown format {kind!r}", f"use one of {', '.join(FORMATS)}")
    if not names:
        raise UsageError("nothing to export", "name at least one image")
    images = [Images(store).get(n, ensure_layers=False) for n in names]
    if loc.ref is not None and len(images) == 1:
        ref_names = [loc.ref]
    elif loc.ref is not None:
        raise UsageError("a :REF in the destination names one image", "export one image")
    else:
        ref_names = [i.name for i in images]
    if kind == "oci":
        _export_layout_dir(images, ref_names, loc.path)
    elif kind == "oci-archive":
        _write_file(loc.path, lambda out: _write_oci_archive(images, ref_names, out))
    else:
        _write_file(loc.path, lambda out: _write_docker_archive(store, images, ref_names, out))
    return kind


def _index_for(
    images: list[Image], ref_names: list[str]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """index.json and the (possibly converted) manifests by digest."""
    manifests: dict[str, bytes] = {}
    entries = []
    for image, ref_name in zip(images, ref_names, strict=True):
        data, digest = _as_oci(image)
        manifests[digest] = data
        entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data)}
        plat = image.platform
        if plat.os and plat.architecture:
            p: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
            if plat.variant:
                p["variant"] = plat.variant
            entry["platform"] = p
        entry["annotations"] = {REF_NAME: ref_name}
        entries.append(entry)
        if digest != image.digest:
            continue  # converted: what is attached to the stored manifest does not apply
        for tag, attached in sorted(Images(image.store).attached(image.digest).items()):
            data = Images(image.store).blobs.read(attached, "attached manifest")
            if attached not in manifests:
                entries.append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": attached,
                        "size": len(data),
                        "annotations": {REF_NAME: tag},
                    }
                )
            manifests[attached] = data
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, manifests


def _image_blobs(image: Image) -> list[tuple[str, int]]:
    """The blobs an export of ``image`` holds besides manifests: its config and layers, and
    those of what is attached to it (its signatures)."""
    out = [(image.config_descriptor.digest, image.config_descriptor.size)]
    out += [(li.blob, li.blob_size) for li in image.layer_infos]
    images = Images(image.store)
    for attached in images.attached(image.digest).values():
        doc = loads(images.blobs.read(attached, "attached manifest"), "attached manifest")
        for d in [doc["config"], *doc["layers"]]:
            out.append((str(d["digest"]), int(d["size"])))
    return out


def _write_oci_archive(images: list[Image], ref_names: list[str], out: IO[bytes]) -> None:
    index, manifests = _index_for(images, ref_names)
    blobs: dict[str, int] = {}
    for image in images:
        for digest, size in _image_blobs(image):
            blobs[digest] = size
    tar = _TarWriter(out)
    tar.add_dir("blobs")
    algs = sorted({d.split(":", 1)[0] for d in [*blobs, *manifests]})
    for alg in algs:
        tar.add_dir(f"blobs/{alg}")
    store_blobs = Images(images[0].store).blobs
    everything = sorted({*blobs, *manifests})
    for digest in everything:
        rel = _blob_rel(digest)
        if digest in manifests:
            tar.add_bytes(rel, manifests[digest])
        else:
            with store_blobs.open(digest) as f:
                tar.add_stream(rel, blobs[digest], f)
    tar.add_bytes("index.json", dumps(index))
    tar.add_bytes("oci-layout", dumps({"imageLayoutVersion": LAYOUT_VERSION}))
    tar.close()


def _export_layout_dir(images: list[Image], ref_names: list[str], path: str) -> None:
    index, manifests = _index_for(images, ref_names)
    existing = os.path.isdir(path) and os.listdir(path)
    if existing and not os.path.isfile(os.path.join(path, "oci-layout")):
        raise UsageError(f"{path} exists and is not an OCI layout", "pick a new or empty directory")
    from tophan._internal.fs import atomic_write, temp_path

    if existing:
        target = path
    else:
        target = temp_path(os.path.abspath(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.mkdir(target)  # fails on anything planted there
    try:
        store_blobs = Images(images[0].store).blobs
        for image in images:
            for digest, _ in _image_blobs(image):
                _copy_blob(store_blobs.path(digest), os.path.join(target, _blob_rel(digest)))
        for digest, data in manifests.items():
            dest = os.path.join(target, _blob_rel(digest))
            if not os.path.exists(dest):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                atomic_write(dest, data)
        if existing:
            with open(os.path.join(target, "index.json"), "rb") as f:
                old = loads(f.read(), "index.json")
            names = {e["annotations"][REF_NAME] for e in index["manifests"]}
            kept = [
                m
                for m in old.get("manifests") or []
                if (m.get("annotations") or {}).get(REF_NAME) not in names
            ]
            index["manifests"] = kept + index["manifests"]
        atomic_write(
            os.path.join(target, "oci-layout"), dumps({"imageLayoutVersion": LAYOUT_VERSION})
        )
        atomic_write(os.path.join(target, "index.json"), dumps(index))
        if not existing:
            if os.path.isdir(path):
                os.rmdir(path)  # an empty directory the caller made for us
            os.rename(target, path)
    except BaseException:
        if not existing:
            shutil.rmtree(target, ignore_errors=True)
        raise


def _copy_blob(src: str, dest: str) -> None:
    if os.path.exists(dest):
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    from tophan._internal.fs import AtomicFile, temp_path

    tmp = temp_path(dest)
    try:
        os.link(src, tmp)  # same filesystem: share the bytes (link never follows a planted name)
    except OSError:
        with open(src, "rb") as f, AtomicFile(dest, 0o644) as out:
            shutil.copyfileobj(f, out, CHUNK)
        return
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_docker_archive(
    store: StoreRoot, images: list[Image], ref_names: list[str], out: IO[bytes]
) -> None:
    """Docker's ``docker save`` layout: ``<config hex>.json``, uncompressed ``<diffid hex>.tar``
    layers (exactly the DiffID's bytes), ``manifest.json`` listing them with ``RepoTags``."""
    tar = _TarWriter(out)
    written: set[str] = set()
    entries = []
    for image, ref_name in zip(images, ref_names, strict=True):
        tags = [] if _is_tag_only(ref_name) else [_docker_tag(ref_name)]
        config_digest = image.config_descriptor.digest
        config_name = f"{config_digest.split(':', 1)[1]}.json"
        layer_names = []
        for li in image.layer_infos:
            layer_name = f"{li.diff_id.split(':', 1)[1]}.tar"
            layer_names.append(layer_name)
            if layer_name in written:
                continue
            written.add(layer_name)
            _write_plain_layer(store, tar, layer_name, li)
        if config_name not in written:
            written.add(config_name)
            tar.add_bytes(config_name, Images(store).blobs.read(config_digest, "config"))
        entries.append({"Config": config_name, "RepoTags": tags, "Layers": layer_names})
    tar.add_bytes("manifest.json", dumps(entries))
    tar.close()


def _docker_tag(name: str) -> str:
    ref = parse_reference(name)
    return str(ref) if ref.tag else f"{ref.repository}:latest"


def _write_plain_layer(store: StoreRoot, tar: _TarWriter, name: str, li: Any) -> None:
    """The layer's uncompressed tar. Ours (DiffID == layer digest) is re-exported from the tree,
    whose size is on record; a foreign one is decompressed from its blob into tmp first (the
    tar header needs its size) and checked against the DiffID."""
    from tophan._internal import meta

    if li.diff_id == li.digest:
        info = meta.read(store.path("layers", li.digest.split(":", 1)[1], "meta"))
        size = int(info["size"])
        from tophan.layer import tarexport

        tree = Layers(store).tree_path(li.digest)
        if os.path.isdir(tree):
            tar._header(name, size, tarfile.REGTYPE)
            digest, written = tarexport.write_tar(tree, tar.out, xattr_ns=store.xattr_ns)
            if digest != li.diff_id or written != size:
                raise IntegrityError(f"layer {li.digest} changed on disk", "run `layer verify`")
            tar._pad(size)
            return
    staging = store.staging("export")
    try:
        plain = os.path.join(staging.path, "layer.tar")
        from tophan._internal.compression import detect, peek
        from tophan.image.images import _decompressor

        with Images(store).blobs.open(li.blob) as f, open(plain, "wb") as out:
            head, stream = peek(f, 6, buffered=False)
            kind = detect(head)
            inner = _decompressor(kind, stream) if kind in ("gzip", "zstd") else stream
            VerifyingReader(inner, li.diff_id, None, what=f"layer {li.blob}", tee=out).drain()
        with open(plain, "rb") as f:
            tar.add_stream(name, os.fstat(f.fileno()).st_size, f)
    finally:
        staging.discard()


def _write_file(dest: str, write: Callable[[IO[bytes]], None]) -> None:
    import sys

    from tophan._internal.fs import AtomicFile

    if dest == "-":
        sys.stdout.flush()
        with os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=CHUNK) as out:
            write(out)
        return
    try:
        with AtomicFile(dest, None, durable=True) as out:
            write(out)
    except OSError as e:
        raise TophanError(f"cannot write {dest}: {e.strerror}") from e
