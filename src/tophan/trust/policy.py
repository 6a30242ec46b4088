"""The containers policy (``containers-policy.json(5)``): which images may be pulled and run.

Parsed strictly, as containers/image does: an unknown key or requirement type is an error, not
something silently ignored (an ignored typo would accept what the author meant to refuse).
Evaluated for the ``docker`` transport: the most specific scope of ``transports.docker`` (the
full reference, then the repository, then each shorter namespace, then the registry, then
``*.domain`` wildcards), else ``default``. Every requirement of the chosen list must accept.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric import ec

    from tophan.image.spec import Reference
    from tophan.trust.signature import Result

MAX_POLICY = 1 << 20  # a policy is a few KiB; a megabyte is not a policy
_MAX_KEY_FILE = 64 * 1024


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
    # sha256 of each key's DER, in the order of ``keys``: what a recorded verification names,
    # computed without ``cryptography`` so the start of a container need not import it.
    fingerprints: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """Why the policy accepted an image: recorded with it at pull, checked again at start."""

    source: str  # the policy file
    scope: str
    kinds: list[str]  # each requirement's type, in order
    signers: list[tuple[str, str]] = field(default_factory=list)  # (key fingerprint, identity)
    notes: list[str] = field(default_factory=list)  # what each requirement found

    @property
    def summary(self) -> str:
        return f"policy {self.source}, scope {self.scope}: " + ", ".join(self.notes or self.kinds)


def fingerprint(pem: bytes) -> str:
    """sha256 (hex) of a PEM public key's DER body; "" when it is not one PEM block."""
    import base64
    import binascii
    import hashlib

    lines = pem.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN "):
        return ""
    if not lines[-1].startswith("-----END "):
        return ""
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return ""
    return hashlib.sha256(der).hexdigest()


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


def _read_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise PolicyError(
            f"cannot read key {path}: {e.strerror}", "check the policy's keyPath"
        ) from e
    if len(data) > _MAX_KEY_FILE:
        raise PolicyError(f"{path} is larger than any key file", "keyPath names a .pub file")
    return data


def _keys(
    d: dict[str, Any], what: str, base: str, load_keys: bool
) -> tuple[list[ec.EllipticCurvePublicKey], list[str]]:
    """(keys, fingerprints); the keys only when ``load_keys`` (that imports ``cryptography``)."""
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
    import base64

    if given[0].startswith("keyPath"):
        pems = [_read_key(os.path.join(base, v)) for v in values]
    else:
        try:
            pems = [base64.b64decode(v, validate=True) for v in values]
        except ValueError as e:
            raise PolicyError(f"{what}: keyData is not base64") from e
    if not load_keys:
        return [], [fingerprint(p) for p in pems]
    from tophan.trust import keys

    return [keys.load_public_key(p, what) for p in pems], [fingerprint(p) for p in pems]


def _requirement(doc: object, what: str, base: str, load_keys: bool) -> Requirement:
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
        found, prints = _keys(d, what, base, load_keys)
        return Requirement("sigstoreSigned", found, ident, prints)
    if kind in ("signedBy", "signedBaseLayer"):
        # GPG "simple signing" (Fedora/RHEL policies name it for their registries): refused
        # when its scope is used, so a system policy holding it still works for other scopes.
        return Requirement(str(kind))
    raise PolicyError(
        f"{what}: requirement type {kind!r} is not supported",
        "tophan knows insecureAcceptAnything, reject and sigstoreSigned",
    )


def _requirements(doc: object, what: str, base: str, load_keys: bool) -> list[Requirement]:
    if not isinstance(doc, list) or not doc:
        raise PolicyError(f"{what} must be a non-empty list of requirements")
    return [_requirement(r, f"{what}[{i}]", base, load_keys) for i, r in enumerate(doc)]


def parse(data: bytes, source: str, *, load_keys: bool = True) -> Policy:
    """The policy in ``data``. Without ``load_keys`` the keys are only fingerprinted (enough to
    compare with a recorded verification; nothing can be verified with such a policy)."""
    import json

    try:
        doc = json.loads(data)
    except ValueError as e:
        raise PolicyError(f"{source} is not JSON: {e}", "fix the policy file") from e
    top = _strict(doc, {"default", "transports"}, source)
    base = os.path.dirname(os.path.abspath(source))
    default = _requirements(top.get("default"), f"{source}: default", base, load_keys)
    transports = top.get("transports") or {}
    if not isinstance(transports, dict):
        raise PolicyError(f"{source}: transports is not an object")
    docker_doc = transports.get("docker") or {}
    if not isinstance(docker_doc, dict):
        raise PolicyError(f"{source}: transports.docker is not an object")
    docker = {
        scope: _requirements(reqs, f"{source}: docker scope {scope!r}", base, load_keys)
        for scope, reqs in docker_doc.items()
    }
    # Other transports (docker-daemon, oci-archive...) are parsed only for their shape.
    return Policy(default, docker, source)


def load(path: str, *, load_keys: bool = True) -> Policy:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY + 1)
    except OSError as e:
        raise PolicyError(f"cannot read policy {path}: {e.strerror}", "check --policy") from e
    if len(data) > MAX_POLICY:
        raise PolicyError(f"policy {path} is larger than {MAX_POLICY} bytes", "not a policy")
    return parse(data, path, load_keys=load_keys)


def find(explicit: str | None, store_root: str | None) -> str | None:
    """See :func:`tophan.trust.find.policy_path`."""
    from tophan.trust.find import policy_path

    return policy_path(explicit, store_root)


def evaluate(
    policy: Policy,
    ref: Reference,
    verify: Callable[[ec.EllipticCurvePublicKey, Callable[[str], bool]], list[Result]],
) -> Verdict:
    """Raise :class:`Refused` unless every requirement of ``ref``'s scope accepts. Returns why
    it was accepted, with the keys and identities of the signatures that verified."""
    scope, reqs = policy.scope_for(ref)
    where = f"policy {policy.source}, scope {scope}"
    accepted = []
    signers: list[tuple[str, str]] = []
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
            for key, print_ in zip(req.keys, req.fingerprints, strict=True):
                results = verify(key, functools.partial(_accepts, req.identity, ref))
                ok += [r for r in results if r.ok]
                signers += [(print_, r.identity) for r in results if r.ok]
                reasons += [r.reason for r in results]
            if not ok:
                why = "it has no signatures" if not reasons else "; ".join(sorted(set(reasons)))
                raise Refused(
                    f"{ref} is refused by {where}: no sigstore signature verifies ({why})",
                    "sign it with a key the policy trusts (tophan sign), or check the policy",
                )
            accepted.append(f"sigstoreSigned ({len(ok)} signature(s), {req.identity.type})")
    return Verdict(policy.source, scope, [r.type for r in reqs], signers, accepted)
