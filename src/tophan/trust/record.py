"""The policy's verdict recorded with an image at pull, and checked again when it starts.

A pull under a policy stores why the image was accepted (policy file, scope, requirement types,
the verified manifest digest, each verifying signature's key fingerprint and signed identity,
the time) in the image's ref, written atomically with it. ``run`` and ``app start`` compare the
policy in force *now* with that record: no signature is verified, no ``cryptography`` imported,
unless the record falls short and ``--verify-again`` asks for a fresh check.

Which scope applies: the reference the image was pulled as; for an image built or imported
here, its name read as a docker reference (``app`` is ``docker.io/library/app:latest``). Such
an image carries no signature, so it runs only where that scope accepts anything.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tophan.errors import TophanError
from tophan.image.spec import Reference, remote_reference
from tophan.trust.policy import Policy, Refused, Requirement, Verdict


class Unsigned(Refused):
    """Refused for want of a verified signature (stored signatures may still satisfy it)."""


FIELD = "trust"  # the image ref's field that holds the record (compact JSON, one line)
PULLED = "pulled from "  # how registry.pull describes an image's source


def make(verdict: Verdict, reference: str, digest: str, *, registry: bool = True) -> str:
    """The record of ``verdict`` for the image ``reference`` names, as the ref field's value
    (``registry``: it came from one; else its stored signatures were verified)."""
    doc = {
        "from": "registry" if registry else "store",
        "policy": verdict.source,
        "scope": verdict.scope,
        "requirements": verdict.kinds,
        "verified": bool(verdict.signers),
        "reference": reference,
        "digest": digest if verdict.signers else "",
        "signers": [{"key": k, "identity": i} for k, i in verdict.signers],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return json.dumps(doc, separators=(",", ":"))


def read(ref: dict[str, str]) -> dict[str, Any] | None:
    """The record in an image's ref fields; None when there is none or it is not one."""
    text = ref.get(FIELD)
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def origin(name: str, ref: dict[str, str]) -> tuple[str, bool]:
    """(the reference the policy is asked about, whether the image came from a registry)."""
    rec = read(ref)
    if rec and isinstance(rec.get("reference"), str):
        return str(rec["reference"]), rec.get("from") != "store"
    source = ref.get("source", "")
    if source.startswith(PULLED):
        return source[len(PULLED) :], True
    return name, False


def target(text: str) -> Reference:
    """``text`` as the docker reference whose scope applies."""
    try:
        return remote_reference(text)
    except (TophanError, ValueError):
        # Not a docker reference (a local name tophan allows and docker does not): only the
        # policy's default can apply to it.
        return Reference("", text, "", "")


def _signed(req: Requirement, rec: dict[str, Any] | None, digest: str, ref: Reference) -> bool:
    """Whether the recorded verification satisfies ``req`` for the image stored as ``digest``."""
    if not rec or not rec.get("verified") or rec.get("digest") != digest:
        return False
    signers = rec.get("signers")
    if not isinstance(signers, list):
        return False
    trusted = set(req.fingerprints) - {""}
    return any(
        isinstance(s, dict)
        and s.get("key") in trusted
        and isinstance(s.get("identity"), str)
        and req.identity.accepts(s["identity"], ref)
        for s in signers
    )


def _why_not(rec: dict[str, Any] | None, from_registry: bool, digest: str) -> str:
    if rec is None and not from_registry:
        return "it was built or imported here and carries no verified signature"
    if rec is None:
        return "it was pulled with no policy in force, so no signature was checked"
    if not rec.get("verified"):
        return (
            f"it was pulled under {', '.join(map(str, rec.get('requirements') or []))}"
            f" (scope {rec.get('scope')}), so no signature was checked"
        )
    if rec.get("digest") != digest:
        return "its recorded verification is for another manifest"
    return (
        "the signatures verified at pull were made with keys or identities"
        " the policy no longer trusts"
    )


def check(pol: Policy, name: str, digest: str, ref: dict[str, str]) -> None:
    """Raise :class:`Refused` unless the policy, applied to what is recorded of the image
    ``name`` (stored as manifest ``digest``, ref fields ``ref``), lets it start."""
    reference, from_registry = origin(name, ref)
    target_ref = target(reference)
    scope, reqs = pol.scope_for(target_ref)
    where = f"policy {pol.source}, scope {scope}"
    rec = read(ref)
    for req in reqs:
        if req.type == "insecureAcceptAnything":
            continue
        if req.type == "reject":
            raise Refused(
                f"{name} is refused by {where}: the requirement is 'reject'",
                "run an image from an allowed scope or change the policy",
            )
        if req.type != "sigstoreSigned":
            raise Refused(
                f"{name} is refused by {where}: tophan cannot check a {req.type!r} requirement",
                "only sigstoreSigned signatures are verified",
            )
        if not _signed(req, rec, digest, target_ref):
            hint = (
                f"check its signatures now with --verify-again, or pull {reference} again"
                if from_registry
                else "sign it (image sign) with a key the policy trusts, or change the policy"
            )
            raise Unsigned(
                f"{name} is refused by {where}: it needs sigstore signatures and"
                f" {_why_not(rec, from_registry, digest)}",
                hint,
            )
