"""``containers-registries.d(5)``: whether sigstore signatures are read and written as registry
attachments (``use-sigstore-attachments``), per scope.

Read from ``$TOPHAN_REGISTRIES_D``, else ``/etc/containers/registries.d``: every ``*.yaml`` in
it, in name order, parsed strictly (an unknown key, a wrong type, a scope or ``default-docker``
given twice is an error: an ignored typo could switch signatures off). The most specific
``docker`` scope for a reference applies (the repository, each shorter namespace, the
registry, ``*.domain`` wildcards), else ``default-docker``, else tophan's default: **true**,
since attachments are the only place tophan keeps sigstore signatures (containers/image's own
default is false). ``lookaside`` GPG signature stores are accepted in the file and not used.
"""

from __future__ import annotations

import functools
import os

from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan.image.spec import Reference

SYSTEM_DIR = "/etc/containers/registries.d"
DEFAULT = True
MAX_FILE = 1 << 20
_KEYS = {
    "lookaside",
    "lookaside-staging",
    "sigstore",
    "sigstore-staging",
    "use-sigstore-attachments",
}


class RegistriesDError(TophanError):
    """A registries.d file is malformed."""


def directory() -> str:
    return os.environ.get("TOPHAN_REGISTRIES_D") or SYSTEM_DIR


def _entry(doc: object, what: str) -> bool | None:
    """A scope's ``use-sigstore-attachments`` (None: not said)."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise RegistriesDError(f"{what} is not a mapping", "see containers-registries.d(5)")
    unknown = sorted(str(k) for k in set(doc) - _KEYS)
    if unknown:
        raise RegistriesDError(
            f"{what}: unknown key {unknown[0]!r}", "see containers-registries.d(5)"
        )
    value = doc.get("use-sigstore-attachments")
    if value is not None and not isinstance(value, bool):
        raise RegistriesDError(
            f"{what}: use-sigstore-attachments must be true or false", f"not {value!r}"
        )
    return value


def _read(path: str) -> object:
    import yaml

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise RegistriesDError(f"cannot read {path}: {e.strerror}", "check its permissions") from e
    if len(data) > MAX_FILE:
        raise RegistriesDError(f"{path} is larger than {MAX_FILE} bytes", "not a registries.d file")
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RegistriesDError(f"{path} is not valid YAML: {first}", "fix or remove it") from e
    except (UnicodeDecodeError, RecursionError) as e:
        raise RegistriesDError(f"{path} is not a registries.d file", "fix or remove it") from e


@functools.lru_cache(maxsize=4)
def load(where: str) -> tuple[bool | None, dict[str, bool | None]]:
    """(``default-docker``'s setting, scope -> setting) of every ``*.yaml`` in ``where``."""
    try:
        names = sorted(n for n in os.listdir(where) if n.endswith(".yaml"))
    except FileNotFoundError:
        return None, {}
    except OSError as e:
        raise RegistriesDError(
            f"cannot list {where}: {e.strerror}", "check $TOPHAN_REGISTRIES_D"
        ) from e
    default: bool | None = None
    seen_default = ""
    scopes: dict[str, bool | None] = {}
    for name in names:
        path = os.path.join(where, name)
        doc = _read(path)
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise RegistriesDError(f"{path} is not a mapping", "see containers-registries.d(5)")
        unknown = sorted(str(k) for k in set(doc) - {"default-docker", "docker"})
        if unknown:
            raise RegistriesDError(
                f"{path}: unknown key {unknown[0]!r}", "see containers-registries.d(5)"
            )
        if "default-docker" in doc:
            if seen_default:
                raise RegistriesDError(
                    f"{path}: default-docker is also set in {seen_default}", "keep one"
                )
            seen_default = path
            default = _entry(doc["default-docker"], f"{path}: default-docker")
        docker = doc.get("docker") or {}
        if not isinstance(docker, dict):
            raise RegistriesDError(
                f"{path}: docker is not a mapping", "see containers-registries.d(5)"
            )
        for scope, entry in docker.items():
            if not isinstance(scope, str) or not scope:
                raise RegistriesDError(f"{path}: a docker scope is not a name", "fix it")
            if scope in scopes:
                raise RegistriesDError(f"{path}: docker scope {scope!r} is set twice", "keep one")
            scopes[scope] = _entry(entry, f"{path}: docker scope {scope!r}")
    return default, scopes


def _scopes(ref: Reference) -> list[str]:
    repo = f"{ref.domain}/{ref.path}"
    parts = repo.split("/")
    out = ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    labels = ref.domain.split(":")[0].split(".")
    return out + ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]


def use_attachments(ref: Reference) -> tuple[bool, str]:
    """(whether sigstore attachments are used for ``ref``, the scope that said so)."""
    default, scopes = load(directory())
    for scope in _scopes(ref):
        value = scopes.get(scope)
        if value is not None:
            return value, scope
    if default is not None:
        return default, "default-docker"
    return DEFAULT, "tophan's default"
