"""The containers policy (``containers-policy.json(5)``): which images may be pulled and run.

Parsed strictly, as containers/image does: an unknown key or requirement type is an error, not
something silently ignored (an ignored typo would accept what the author meant to refuse).
Evaluated for the ``docker`` transport: the most specific scope of ``transports.docker`` (the
full reference, then the repository, then each shorter namespace, then the registry, then
``*.domain`` wildcards), else ``default``. Every requirement of the chosen list must accept.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any

from tophan.errors import TophanError
from tophan.trust import keys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric import ec

    from tophan.image.spec import Reference
    from tophan.trust.signature import Result

SYSTEM_POLICY = "/etc/containers/policy.json"
MAX_POLICY = 1 << 20  # a policy is a few KiB; a megabyte is not a policy


class PolicyError(TophanError):
    """The policy file is malformed."""


class Refused(TophanError):
    """The policy refuses an image."""


@dataclass
class Identity:
    """``signedIdentity``: which signed ``docker-reference`` values name this image."""

    type: str = "matchRepoDigestOrExact"
    reference: str = ""  # exactReference's dockerReference / exactRepository's dockerRepository

    def accepts(self, signed: str, ref: Reference) -> bool:
        repo = f"{ref.domain}/{ref.path}"
        if self.type == "matchRepository":
            return _repository_of(signed) == repo
        if self.type == "matchExact":
            return bool(ref.tag) and not ref.digest and signed == f"{repo}:{ref.tag}"
        if self.type == "matchRepoDigestOrExact":
            if ref.digest:
                return _repository_of(signed) == repo
            return signed == f"{repo}:{ref.tag}"
        if self.type == "exactReference":
            return signed == self.reference
        if self.type == "exactRepository":
            return _repository_of(signed) == self.reference
        return False


def _accepts(identity: Identity, ref: Reference, signed: str) -> bool:
    return identity.accepts(signed, ref)


def _repository_of(identity: str) -> str:
    name = identity.split("@", 1)[0]
    return name[: name.rfind(":")] if name.rfind(":") > name.rfind("/") else name


@dataclass
class Requirement:
    type: str
    keys: list[ec.EllipticCurvePublicKey] = field(default_factory=list)
    identity: Identity = field(default_factory=Identity)


@dataclass
class Policy:
    default: list[Requirement]
    docker: dict[str, list[Requirement]]
    source: str

    def scope_for(self, ref: Reference) -> tuple[str, list[Requirement]]:
        """(scope name, requirements) for ``ref``, the most specific scope first."""
        for scope in _scopes(ref):
            if scope in self.docker:
                return scope, self.docker[scope]
        return "default", self.default


def _scopes(ref: Reference) -> list[str]:
    repo = f"{ref.domain}/{ref.path}"
    out = []
    if ref.digest:
        out.append(f"{repo}@{ref.digest}")
    if ref.tag:
        out.append(f"{repo}:{ref.tag}")
    parts = repo.split("/")
    out += ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    labels = ref.domain.split(":")[0].split(".")
    out += ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
    return out


def _strict(doc: object, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise PolicyError(f"{what} is not a JSON object")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise PolicyError(f"{what}: unknown key {unknown[0]!r}", "containers-policy.json(5)")
    return doc


def _identity(doc: object, what: str) -> Identity:
    d = _strict(doc, {"type", "dockerReference", "dockerRepository"}, what)
    kind = d.get("type")
    known = {
        "matchRepository",
        "matchExact",
        "matchRepoDigestOrExact",
        "exactReference",
        "exactRepository",
    }
    if kind not in known:
        raise PolicyError(
            f"{what}: signedIdentity type {kind!r} is not supported",
            f"use one of {', '.join(sorted(known))}",
        )
    ref = d.get("dockerReference") or d.get("dockerRepository") or ""
    if kind in ("exactReference", "exactRepository") and not (isinstance(ref, str) and ref):
        raise PolicyError(f"{what}: {kind} needs its reference")
    return Identity(str(kind), str(ref))


def _keys(d: dict[str, Any], what: str, base: str) -> list[ec.EllipticCurvePublicKey]:
    given = [k for k in ("keyPath", "keyPaths", "keyData", "keyDatas") if k in d]
    if len(given) != 1:
        raise PolicyError(
            f"{what}: sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas",
            "keyless (fulcio/rekor) verification is not supported yet",
        )
    value = d[given[0]]
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise PolicyError(f"{what}: {given[0]} must be a string (or a list of strings)")
    if given[0].startswith("keyPath"):
        return [keys.read_public_key(os.path.join(base, v)) for v in values]
    try:
        return [keys.load_public_key(base64.b64decode(v, validate=True), what) for v in values]
    except ValueError as e:
        raise PolicyError(f"{what}: keyData is not base64") from e


def _requirement(doc: object, what: str, base: str) -> Requirement:
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind in ("insecureAcceptAnything", "reject"):
        _strict(doc, {"type"}, what)
        return Requirement(str(kind))
    if kind == "sigstoreSigned":
        d = _strict(
            doc,
            {"type", "keyPath", "keyPaths", "keyData", "keyDatas", "signedIdentity"},
            what,
        )
        ident = _identity(d["signedIdentity"], what) if "signedIdentity" in d else Identity()
        return Requirement("sigstoreSigned", _keys(d, what, base), ident)
    if kind in ("signedBy", "signedBaseLayer"):
        # GPG "simple signing" (Fedora/RHEL policies name it for their registries): refused
        # when its scope is used, so a system policy holding it still works for other scopes.
        return Requirement(str(kind))
    raise PolicyError(
        f"{what}: requirement type {kind!r} is not supported",
        "tophan knows insecureAcceptAnything, reject and sigstoreSigned",
    )


def _requirements(doc: object, what: str, base: str) -> list[Requirement]:
    if not isinstance(doc, list) or not doc:
        raise PolicyError(f"{what} must be a non-empty list of requirements")
    return [_requirement(r, f"{what}[{i}]", base) for i, r in enumerate(doc)]


def parse(data: bytes, source: str) -> Policy:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise PolicyError(f"{source} is not JSON: {e}", "fix the policy file") from e
    top = _strict(doc, {"default", "transports"}, source)
    base = os.path.dirname(os.path.abspath(source))
    default = _requirements(top.get("default"), f"{source}: default", base)
    transports = top.get("transports") or {}
    if not isinstance(transports, dict):
        raise PolicyError(f"{source}: transports is not an object")
    docker_doc = transports.get("docker") or {}
    if not isinstance(docker_doc, dict):
        raise PolicyError(f"{source}: transports.docker is not an object")
    docker = {
        scope: _requirements(reqs, f"{source}: docker scope {scope!r}", base)
        for scope, reqs in docker_doc.items()
    }
    # Other transports (docker-daemon, oci-archive...) are parsed only for their shape.
    return Policy(default, docker, source)


def load(path: str) -> Policy:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY + 1)
    except OSError as e:
        raise PolicyError(f"cannot read policy {path}: {e.strerror}", "check --policy") from e
    if len(data) > MAX_POLICY:
        raise PolicyError(f"policy {path} is larger than {MAX_POLICY} bytes", "not a policy")
    return parse(data, path)


def find(explicit: str | None, store_root: str | None) -> str | None:
    """``--policy``, else ``$TOPHAN_POLICY``, else the store's ``policy.json``, else the system's;
    None when there is none (then nothing is enforced, as before policies existed)."""
    if explicit:
        return explicit
    if os.environ.get("TOPHAN_POLICY"):
        return os.environ["TOPHAN_POLICY"]
    candidates = [os.path.join(store_root, "policy.json")] if store_root else []
    candidates.append(SYSTEM_POLICY)
    return next((p for p in candidates if os.path.exists(p)), None)


def evaluate(
    policy: Policy,
    ref: Reference,
    verify: Callable[[ec.EllipticCurvePublicKey, Callable[[str], bool]], list[Result]],
) -> str:
    """Raise :class:`Refused` unless every requirement of ``ref``'s scope accepts. Returns a
    one-line summary of why it was accepted (recorded with the image)."""
    scope, reqs = policy.scope_for(ref)
    where = f"policy {policy.source}, scope {scope}"
    accepted = []
    for req in reqs:
        if req.type == "insecureAcceptAnything":
            accepted.append("insecureAcceptAnything")
        elif req.type == "reject":
            raise Refused(
                f"{ref} is refused by {where}: the requirement is 'reject'",
                "pull from an allowed scope or change the policy",
            )
        elif req.type != "sigstoreSigned":
            raise Refused(
                f"{ref} is refused by {where}: tophan cannot check a {req.type!r} requirement",
                "only sigstoreSigned signatures are verified; use skopeo/podman for GPG ones",
            )
        else:
            ok = []
            reasons: list[str] = []
            for key in req.keys:
                results = verify(key, functools.partial(_accepts, req.identity, ref))
                ok += [r for r in results if r.ok]
                reasons += [r.reason for r in results]
            if not ok:
                why = "it has no signatures" if not reasons else "; ".join(sorted(set(reasons)))
                raise Refused(
                    f"{ref} is refused by {where}: no sigstore signature verifies ({why})",
                    "sign it with a key the policy trusts (tophan sign), or check the policy",
                )
            accepted.append(f"sigstoreSigned ({len(ok)} signature(s), {req.identity.type})")
    return f"{where}: " + ", ".join(accepted)
