"""Signatures in a registry: attach one to an image's ``sha256-H.sig`` tag, read and verify them."""

from __future__ import annotations

import io

from tophan.errors import NotFound
from tophan.image.blobs import digest_of
from tophan.image.registry import Options, Repository, repository_for
from tophan.image.spec import Reference
from tophan.trust import policy
from tophan.trust import signature as sg

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric import ec


def _reads(ref: Reference) -> bool:
    """Whether registries.d lets signatures be read from ``ref``'s registry attachments."""
    from tophan.trust import registries

    return registries.use_attachments(ref)[0]


def check_writes(ref: Reference) -> None:
    from tophan.errors import UsageError
    from tophan.trust import registries

    ok, scope = registries.use_attachments(ref)
    if not ok:
        raise UsageError(
            f"{ref}: sigstore attachments are off for {scope} (use-sigstore-attachments: false)",
            f"set it to true in {registries.directory()} to keep signatures in that registry",
        )


def identity_of(ref: Reference) -> str:
    """What a signature names: the repository (``host/path``), as cosign signs it."""
    return f"{ref.domain}/{ref.path}"


def _digest(repo: Repository, ref: Reference) -> str:
    if ref.digest:
        return ref.digest
    digest = repo.head_manifest(ref.tag)
    if digest is None:
        raise NotFound(f"no such image: {ref}", "push it first, or check the tag")
    return digest


def _existing(repo: Repository, tag: str) -> list[tuple[dict[str, object], str]]:
    try:
        manifest = repo.get_manifest(tag)
    except NotFound:
        return []
    return sg.parse_manifest(manifest.data, f"{repo.path}:{tag}")


def _upload(repo: Repository, data: bytes) -> str:
    digest = digest_of(data)
    if not repo.blob_exists(digest):
        repo.upload_blob(digest, len(data), lambda: io.BytesIO(data))
    return digest


def attach(repo: Repository, digest: str, sig: sg.Signature) -> str:
    """Append ``sig`` to the signatures of ``digest`` (same payload twice is stored once)."""
    return attach_all(repo, digest, [sig])


def attach_all(repo: Repository, digest: str, sigs: list[sg.Signature]) -> str:
    """Append each of ``sigs`` to the signatures of ``digest`` in one manifest update."""
    tag = sg.signature_tag(digest)
    layers = [layer for layer, _ in _existing(repo, tag)]
    for sig in sigs:
        new = sig.layer(_upload(repo, sig.payload))
        if new not in layers:
            layers.append(new)
    config = sg.build_config(str(layer["digest"]) for layer in layers)
    config_digest = _upload(repo, config)
    manifest = sg.build_manifest(layers, config_digest, len(config))
    repo.put_manifest(tag, manifest, sg.OCI_MANIFEST)
    return tag


def sign(
    reference: str, key: ec.EllipticCurvePrivateKey, options: Options | None = None
) -> tuple[str, str]:
    """Sign the image ``reference`` names in its registry. Returns (digest, signature tag)."""
    repo, ref = repository_for(reference, options)
    try:
        check_writes(ref)
        digest = _digest(repo, ref)
        sig = sg.sign_payload(key, sg.make_payload(identity_of(ref), digest))
        return digest, attach(repo, digest, sig)
    finally:
        repo.client.close()


def fetch(repo: Repository, digest: str) -> list[sg.Signature]:
    """Every simple-signing signature attached to ``digest``, payloads verified by digest."""
    out = []
    tag = sg.signature_tag(digest)
    for layer, b64 in _existing(repo, tag):
        size, pdigest = layer.get("size"), layer.get("digest")
        if not isinstance(size, int) or not isinstance(pdigest, str):
            continue
        if size > sg.MAX_PAYLOAD:
            out.append(sg.Signature(b"", ""))  # reported as malformed, never downloaded
            continue
        out.append(sg.Signature(repo.read_blob(pdigest, size, f"signature payload {pdigest}"), b64))
    return out


def push_signatures(
    reference: str, digest: str, sigs: list[sg.Signature], options: Options | None = None
) -> str:
    """Attach ``sigs`` (stored with an image just pushed as ``digest``) in its repository."""
    repo, ref = repository_for(reference, options)
    try:
        check_writes(ref)
        return attach_all(repo, digest, sigs)
    finally:
        repo.client.close()


def pull_signatures(
    reference: str, digest: str, options: Options | None = None
) -> list[sg.Signature]:
    """The signatures of ``digest`` in ``reference``'s repository, to store with the image."""
    repo, ref = repository_for(reference, options)
    try:
        return [s for s in fetch(repo, digest) if s.payload] if _reads(ref) else []
    finally:
        repo.client.close()


def verify(
    reference: str,
    key: ec.EllipticCurvePublicKey,
    options: Options | None = None,
    identity_ok: Callable[[str], bool] | None = None,
) -> tuple[str, list[sg.Result]]:
    """Check every signature of the image ``reference`` names. ``identity_ok`` decides which
    signed identities are acceptable (default: this repository's)."""
    repo, ref = repository_for(reference, options)
    want = identity_of(ref)
    accept = identity_ok or (lambda ident: _repository_of(ident) == want)
    try:
        digest = _digest(repo, ref)
        sigs = fetch(repo, digest) if _reads(ref) else []
    finally:
        repo.client.close()
    return digest, [sg.check(i, s, key, digest, accept) for i, s in enumerate(sigs)]


def _repository_of(identity: str) -> str:
    """``host/path[:tag][@digest]`` -> ``host/path`` (skopeo signs with the tag, cosign without)."""
    name = identity.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def admit(
    reference: str, pol: policy.Policy, options: Options | None = None, digest: str = ""
) -> tuple[str, policy.Verdict]:
    """Check ``reference`` against the policy before anything is stored. Returns (the digest
    checked, why it was accepted); the caller pulls exactly that digest, so what a registry
    serves afterwards cannot differ from what was verified. ``digest``: check that manifest
    (an image already stored, ``--verify-again``) under ``reference``'s scope. Raises
    ``policy.Refused``."""
    repo, ref = repository_for(reference, options)
    try:
        scope, reqs = pol.scope_for(ref)
        if all(r.type == "insecureAcceptAnything" for r in reqs):
            return digest, policy.Verdict(pol.source, scope, [r.type for r in reqs])
        digest = digest or _digest(repo, ref)
        wanted = any(r.type == "sigstoreSigned" for r in reqs) and _reads(ref)
        sigs = fetch(repo, digest) if wanted else []
    finally:
        repo.client.close()

    def verify(
        key: ec.EllipticCurvePublicKey, identity_ok: Callable[[str], bool]
    ) -> list[sg.Result]:
        return [sg.check(i, s, key, digest, identity_ok) for i, s in enumerate(sigs)]

    return digest, policy.evaluate(pol, ref, verify)
