"""Signatures kept in the store with an image: the cosign signature manifest, attached to the
image's manifest digest under ``sha256-H.sig`` exactly as a registry holds it (payloads and an
empty config as blobs). ``image sign`` adds to it, ``pull`` fills it from the registry, ``push``
and OCI layout export carry it, ``verify NAME`` checks it offline."""

from __future__ import annotations

from tophan.image.blobs import digest_of
from tophan.image.spec import remote_reference
from tophan.trust import signature as sg

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric import ec

    from tophan.image.images import Images
    from tophan.trust.policy import Policy, Verdict


def signatures(images: Images, digest: str) -> list[sg.Signature]:
    """The stored signatures of manifest ``digest`` (a payload too large or missing is kept as
    an empty signature, reported malformed by :func:`signature.check`)."""
    tag = sg.signature_tag(digest)
    manifest = images.attached(digest).get(tag)
    if manifest is None:
        return []
    data = images.blobs.read(manifest, "signature manifest")
    out = []
    for layer, b64 in sg.parse_manifest(data, f"stored signatures of {digest}"):
        pdigest, size = layer.get("digest"), layer.get("size")
        if not (isinstance(pdigest, str) and isinstance(size, int)) or size > sg.MAX_PAYLOAD:
            out.append(sg.Signature(b"", ""))
            continue
        out.append(sg.Signature(images.blobs.read(pdigest, "signature payload"), b64))
    return out


def add(images: Images, digest: str, sigs: list[sg.Signature]) -> int:
    """Append ``sigs`` to the stored signatures of ``digest`` (each stored once). Returns how
    many it holds now."""
    merged = signatures(images, digest)
    merged += [s for s in sigs if s not in merged and s.payload]
    layers = [s.layer(digest_of(s.payload)) for s in merged]
    config = sg.build_config(str(layer["digest"]) for layer in layers)
    manifest = sg.build_manifest(layers, digest_of(config), len(config))
    with images.transaction() as tx:
        blobs = [config, *(s.payload for s in merged)]
        tx.attach(digest, sg.signature_tag(digest), manifest, blobs)
        tx.commit()
    return len(merged)


def identity_for(name: str) -> str:
    """What a signature of the image ``name`` names by default: its repository, as a docker
    reference (``app`` -> ``docker.io/library/app``), as cosign signs it."""
    ref = remote_reference(name)
    return f"{ref.domain}/{ref.path}"


def sign(
    images: Images, name: str, key: ec.EllipticCurvePrivateKey, identity: str | None = None
) -> tuple[str, str]:
    """Sign the stored image ``name`` for ``identity`` (default: its name). Returns (manifest
    digest, identity signed)."""
    digest = images.ref(name)["digest"]
    ident = identity or identity_for(name)
    add(images, digest, [sg.sign_payload(key, sg.make_payload(ident, digest))])
    return digest, ident


def verify(
    images: Images, name: str, key: ec.EllipticCurvePublicKey, identity_ok: Callable[[str], bool]
) -> tuple[str, list[sg.Result]]:
    """Check every stored signature of the image ``name``, offline."""
    digest = images.ref(name)["digest"]
    sigs = signatures(images, digest)
    return digest, [sg.check(i, s, key, digest, identity_ok) for i, s in enumerate(sigs)]


def admit(images: Images, reference: str, digest: str, pol: Policy) -> Verdict:
    """The policy's verdict on the stored manifest ``digest`` under ``reference``'s scope, from
    the signatures stored with it (offline). Raises ``policy.Refused``."""
    from tophan.trust import policy
    from tophan.trust.record import target

    sigs = signatures(images, digest)

    def verify(
        key: ec.EllipticCurvePublicKey, identity_ok: Callable[[str], bool]
    ) -> list[sg.Result]:
        return [sg.check(i, s, key, digest, identity_ok) for i, s in enumerate(sigs)]

    return policy.evaluate(pol, target(reference), verify)
