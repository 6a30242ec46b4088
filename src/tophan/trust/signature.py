"""Simple-signing payloads and cosign signature manifests (containers/image "sigstore signatures").

A signature of manifest digest ``sha256:H`` lives in the same repository under the tag
``sha256-H.sig``: an OCI image manifest whose every layer is one payload (media type
``application/vnd.dev.cosign.simplesigning.v1+json``) carrying its base64 ECDSA signature in the
annotation ``dev.cosignproject.cosign/signature``. Verification is separated from fetching
(:func:`check`) so another verifier (a sigstore bundle with Fulcio/Rekor) can plug in beside the
key verifier later.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from typing import Any

from tophan.errors import TophanError
from tophan.trust import keys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from cryptography.hazmat.primitives.asymmetric import ec

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# A payload is ~250 bytes; anything much bigger is not a signature and is not parsed.
MAX_PAYLOAD = 64 * 1024
MAX_SIGNATURES = 256


class SignatureError(TophanError):
    """No signature verifies, or a signature document is malformed."""


def signature_tag(digest: str) -> str:
    """``sha256:H`` -> ``sha256-H.sig``, the tag cosign and containers/image use."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.sig"


def make_payload(
    docker_reference: str, digest: str, optional: dict[str, Any] | None = None
) -> bytes:
    """The simple-signing payload, fields in cosign's order and compact like Go's encoder."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": optional,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Signature:
    """One layer of a signature manifest: the payload and its base64 signature."""

    payload: bytes
    signature_b64: str

    def layer(self, payload_digest: str) -> dict[str, Any]:
        return {
            "mediaType": PAYLOAD_TYPE,
            "size": len(self.payload),
            "digest": payload_digest,
            "annotations": {SIGNATURE_ANNOTATION: self.signature_b64},
        }


def sign_payload(key: ec.EllipticCurvePrivateKey, payload: bytes) -> Signature:
    return Signature(payload, base64.b64encode(keys.sign(key, payload)).decode())


@dataclass
class Result:
    """What one signature said: ``ok`` only when the key, digest, identity and type all hold."""

    index: int
    ok: bool
    reason: str
    identity: str = ""
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _critical(payload: bytes) -> tuple[str, str, str]:
    """(type, docker-reference, docker-manifest-digest) of a payload, or ValueError."""
    doc = json.loads(payload)
    crit = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(crit, dict):
        raise ValueError("no 'critical' object")
    ident, image = crit.get("identity"), crit.get("image")
    ref = ident.get("docker-reference") if isinstance(ident, dict) else None
    dig = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    kind = crit.get("type")
    if not (isinstance(ref, str) and isinstance(dig, str) and isinstance(kind, str)):
        raise ValueError("identity, image digest or type missing")
    return kind, ref, dig


def check(
    index: int,
    sig: Signature,
    key: ec.EllipticCurvePublicKey,
    digest: str,
    identity_ok: Any,
) -> Result:
    """Verify one signature: cryptography first (nothing unsigned is parsed), then the payload's
    type and digest, then ``identity_ok(docker_reference)`` (the policy's signedIdentity)."""
    try:
        raw = base64.b64decode(sig.signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return Result(index, False, "the signature annotation is not base64")
    if len(sig.payload) > MAX_PAYLOAD:
        return Result(index, False, "the payload is larger than any signature payload")
    if not keys.verify(key, raw, sig.payload):
        return Result(index, False, "the signature does not verify with this key")
    try:
        kind, ref, dig = _critical(sig.payload)
    except (ValueError, UnicodeDecodeError) as e:
        return Result(index, False, f"the signed payload is malformed: {e}")
    if kind != SIGNATURE_TYPE:
        return Result(index, False, f"the signed payload's type is {kind!r}", ref, dig)
    if dig != digest:
        return Result(index, False, f"the signature is for another image ({dig})", ref, dig)
    if not identity_ok(ref):
        return Result(index, False, f"the signed identity {ref} does not match", ref, dig)
    return Result(index, True, "verified", ref, dig)


def parse_manifest(data: bytes, what: str) -> list[tuple[dict[str, Any], str]]:
    """(layer descriptor, base64 signature) of each simple-signing layer of a signature
    manifest; other layers (attestations cosign may add) are skipped."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise SignatureError(f"{what} is not JSON", "the signature manifest is damaged") from e
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise SignatureError(f"{what} has no layers", "it is not a cosign signature manifest")
    if len(layers) > MAX_SIGNATURES:
        raise SignatureError(
            f"{what} has {len(layers)} signatures", f"more than {MAX_SIGNATURES} is not plausible"
        )
    out = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_TYPE:
            continue
        ann = layer.get("annotations")
        sig = ann.get(SIGNATURE_ANNOTATION) if isinstance(ann, dict) else None
        out.append((layer, sig if isinstance(sig, str) else ""))
    return out


def build_manifest(layers: Iterable[dict[str, Any]], config_digest: str, config_size: int) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config_size, "digest": config_digest},
        "layers": list(layers),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def build_config(layer_digests: Iterable[str]) -> bytes:
    """The config cosign writes for a signature image: empty but for the layer list."""
    doc = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()
