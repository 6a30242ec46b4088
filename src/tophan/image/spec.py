"""What the OCI image spec and Docker's formats say: media types, references, platforms.

Pure functions and small value types, no store access, shared by images, oci (layouts and
archives) and registry (the distribution client).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tophan.errors import IntegrityError, UsageError
from tophan.image.blobs import check_digest, is_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# -- media types ------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
IMAGE_CONFIGS = (OCI_CONFIG, DOCKER_CONFIG)
# What we send as Accept when fetching a manifest (most preferred first).
ACCEPT = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def layer_compression(media_type: str) -> str | None:
    """The compression a layer media type declares: "gzip", "zstd" or None (plain tar)."""
    if media_type in (DOCKER_LAYER, DOCKER_FOREIGN):
        return "gzip"
    if media_type.startswith(
        ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")
    ):
        if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
            return "gzip"
        if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
            return "zstd"
        if media_type.endswith(".tar"):
            return None
    raise IntegrityError(
        f"unsupported layer media type {media_type!r}", "only tar, tar+gzip and tar+zstd layers"
    )


def oci_layer_type(compression: str | None) -> str:
    return {None: OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]


def is_distributable(media_type: str) -> bool:
    return "nondistributable" not in media_type and media_type != DOCKER_FOREIGN


# -- descriptors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (the parts we act on; the raw dict keeps the rest)."""

    media_type: str
    digest: str
    size: int
    raw: dict[str, Any]

    @classmethod
    def parse(cls, obj: object, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise IntegrityError(f"{what} is not a descriptor object")
        media_type = obj.get("mediaType")
        size = obj.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise IntegrityError(f"{what} has no mediaType")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise IntegrityError(f"{what} has no valid size")
        return cls(media_type, check_digest(obj.get("digest"), f"{what} digest"), size, obj)

    @property
    def platform(self) -> Platform | None:
        p = self.raw.get("platform")
        if not isinstance(p, dict):
            return None
        return Platform(
            str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "") or "")
        )

    @property
    def annotations(self) -> dict[str, str]:
        a = self.raw.get("annotations")
        return {str(k): str(v) for k, v in a.items()} if isinstance(a, dict) else {}

    def as_dict(self) -> dict[str, Any]:
        return dict(self.raw)


def parse_manifest(doc: dict[str, Any], media_type: str | None, what: str) -> dict[str, Any]:
    """Check an image manifest's shape; returns it. ``media_type`` is what the transport said."""
    mt = doc.get("mediaType") or media_type
    if doc.get("schemaVersion") == 1 or mt in DOCKER_SCHEMA1:
        raise IntegrityError(
            f"{what} is a Docker schema 1 manifest", "re-push the image with a current tool"
        )
    if doc.get("schemaVersion") != 2:
        raise IntegrityError(f"{what} has schemaVersion {doc.get('schemaVersion')!r}, not 2")
    if "manifests" in doc:
        raise IntegrityError(f"{what} is an index, not an image manifest")
    Descriptor.parse(doc.get("config"), f"{what}: config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise IntegrityError(f"{what} has no layers list")
    for i, layer in enumerate(layers):
        Descriptor.parse(layer, f"{what}: layer {i}")
    return doc


def is_index(doc: dict[str, Any], media_type: str | None) -> bool:
    return (doc.get("mediaType") or media_type) in INDEXES or (
        "manifests" in doc and "layers" not in doc
    )


# -- platforms --------------------------------------------------------------------------------

_MACHINES = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise UsageError(
                f"invalid platform {text!r}", "use os/arch[/variant], e.g. linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        arch, variant = _MACHINES.get(os.uname().machine, (os.uname().machine, ""))
        return cls("linux", arch, variant)

    def matches(self, other: Platform | None) -> bool:
        """Does ``other`` (an index entry's platform) satisfy this wanted platform?"""
        if other is None:
            return False
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        # arm64 images usually carry variant v8 or none: both run; otherwise a wanted variant
        # must match, and no wanted variant takes the first entry of the arch.
        if not self.variant or not other.variant:
            return True
        return self.variant == other.variant


def select_platform(manifests: list[Descriptor], wanted: Platform, what: str) -> Descriptor:
    """The index entry for ``wanted``: image manifests only, attestation entries skipped."""
    candidates = [
        m
        for m in manifests
        if m.media_type in MANIFESTS + INDEXES
        and m.annotations.get("vnd.docker.reference.type") != "attestation-manifest"
    ]
    for m in candidates:
        if wanted.matches(m.platform):
            return m
    if len(candidates) == 1 and candidates[0].platform is None:
        return candidates[0]  # an index without platforms (e.g. one image in an OCI layout)
    have = ", ".join(sorted({str(m.platform) for m in candidates if m.platform})) or "none"
    raise UsageError(
        f"{what} has no image for platform {wanted}", f"available: {have}; pick with --platform"
    )


# -- references -------------------------------------------------------------------------------
# The grammar of github.com/distribution/reference, which every registry client accepts.

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_REF = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?"
    r"(?:@(?P<digest>[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+))?$"
)
_TAG_ONLY = re.compile(rf"^{_TAG}$")
MAX_NAME = 255
DOCKER_HUB = "docker.io"
REF_RULE = "[registry[:port]/]path[:tag][@digest], lowercase path, e.g. localhost:5000/app:v1"


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. ``domain`` is "" for a local name without a registry part."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, "")


_PATH_RE = re.compile(rf"^{_PATH}$")


def parse_reference(text: str, *, what: str = "image reference") -> Reference:
    """Parse ``text`` as given (no defaults added); :class:`UsageError` when it is not one."""
    m = _REF.match(text) if 0 < len(text) <= MAX_NAME else None
    if m is None:
        raise UsageError(f"invalid {what}: {text!r}", f"references are {REF_RULE}")
    domain = m["domain"] or ""
    path = m["path"]
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        # Docker's rule: a first component without '.' or ':' (and not localhost) is a path
        # component ("library/busybox"), not a registry host.
        domain, path = "", f"{domain}/{path}"
        if not _PATH_RE.match(path):
            raise UsageError(f"invalid {what}: {text!r}", f"references are {REF_RULE}")
    digest = m["digest"] or ""
    if digest and not is_digest(digest):
        raise UsageError(
            f"invalid {what}: {text!r}", "a digest is sha256:<64 hex> or sha512:<128 hex>"
        )
    return Reference(domain, path, m["tag"] or "", digest)


def normalize_name(text: str) -> str:
    """A local image name: the reference as written, with ``:latest`` when it has no tag or
    digest (so ``app`` and ``app:latest`` are one image, as with docker and podman)."""
    ref = parse_reference(text, what="image name")
    if not ref.tag and not ref.digest:
        ref = ref.with_tag("latest")
    return str(ref)


def remote_reference(text: str) -> Reference:
    """A reference to pull or push: Docker Hub's defaults applied (``docker.io``, ``library/``),
    ``latest`` when neither tag nor digest is given."""
    ref = parse_reference(text)
    domain, path = ref.domain, ref.path
    if not domain:
        domain = DOCKER_HUB
    if domain in (DOCKER_HUB, "index.docker.io") and "/" not in path:
        path = f"library/{path}"
    tag = ref.tag or ("" if ref.digest else "latest")
    return Reference(domain, path, tag, ref.digest)


def config_diff_ids(raw_config: dict[str, Any], count: int, what: str) -> list[str]:
    """The config's ``rootfs.diff_ids``, checked: one valid digest per layer of the manifest,
    and every other field tophan reads of the right type (:func:`check_config`)."""
    check_config(raw_config, f"{what}: config")
    diff_ids = raw_config["rootfs"]["diff_ids"]
    if len(diff_ids) != count:
        raise IntegrityError(f"{what}: config lists {len(diff_ids)} DiffIDs for {count} layers")
    return [check_digest(d, "DiffID") for d in diff_ids]


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``<alg>-<hex>`` (hex cut to 64)."""
    alg, _, hexd = digest.partition(":")
    return f"{alg}-{hexd[:64]}"


# -- image configs from elsewhere ---------------------------------------------------------------
# The fields of an image config that tophan reads, with the JSON type each must have: a config
# comes from a registry or an archive, so anything else is refused (naming the field) before
# any code trusts it. None marks a field that may also be null.
_STR, _INT, _LIST, _OBJ = str, int, list, dict
_CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    "Env": (_LIST, type(None)),
    "Cmd": (_LIST, type(None)),
    "Entrypoint": (_LIST, type(None)),
    "WorkingDir": (_STR,),
    "User": (_STR,),
    "StopSignal": (_STR,),
    "ExposedPorts": (_OBJ, type(None)),
    "Volumes": (_OBJ, type(None)),
    "Labels": (_OBJ, type(None)),
    "Healthcheck": (_OBJ, type(None)),
}
_HEALTH_FIELDS: dict[str, tuple[type, ...]] = {
    "Test": (_LIST, type(None)),
    "Interval": (_INT,),
    "Timeout": (_INT,),
    "StartPeriod": (_INT,),
    "StartInterval": (_INT,),
    "Retries": (_INT,),
}


def check_config(doc: dict[str, Any], what: str) -> None:
    """Refuse an image config whose fields we read have the wrong JSON types."""
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise IntegrityError(f"{what}: rootfs is {_kind(rootfs)}, not an object")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        kind = "a list of other things" if isinstance(diff_ids, list) else _kind(diff_ids)
        raise IntegrityError(f"{what}: rootfs.diff_ids is {kind}, not a list of digests")
    if not isinstance(doc.get("history"), list | None):
        raise IntegrityError(f"{what}: history is {_kind(doc['history'])}, not a list")
    config = doc.get("config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise IntegrityError(f"{what}: config is {_kind(config)}, not an object")
    _check_fields(config, _CONFIG_FIELDS, f"{what}: config.")
    for key in ("Env", "Cmd", "Entrypoint"):
        if not all(isinstance(x, str) for x in config.get(key) or []):
            raise IntegrityError(f"{what}: config.{key} holds something other than strings")
    labels = config.get("Labels") or {}
    if not all(isinstance(v, str) for v in labels.values()):
        raise IntegrityError(f"{what}: config.Labels holds a value that is not a string")
    health = config.get("Healthcheck")
    if health is not None:
        _check_fields(health, _HEALTH_FIELDS, f"{what}: config.Healthcheck.")
        if not all(isinstance(x, str) for x in health.get("Test") or []):
            raise IntegrityError(f"{what}: config.Healthcheck.Test holds a non-string")


def _check_fields(obj: dict[str, Any], fields: dict[str, tuple[type, ...]], prefix: str) -> None:
    for key, types in fields.items():
        if key not in obj:
            continue
        value = obj[key]
        bad = isinstance(value, bool) and int in types  # JSON true is not a number
        if bad or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else _JSON_NAMES[t] for t in types)
            raise IntegrityError(f"{prefix}{key} is {_kind(value)}, not {want}")


_JSON_NAMES = {str: "a string", int: "a number", list: "a list", dict: "an object"}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for t, name in _JSON_NAMES.items():
        if isinstance(value, t):
            return name
    return "a number"


def json_list(doc: dict[str, Any], key: str, what: str) -> list[Any]:
    """``doc[key]`` as a list (absent or null: empty); anything else is refused by name."""
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise IntegrityError(f"{what}: {key} is {_kind(value)}, not a list")
    return value
