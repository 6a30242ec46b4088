"""What the instructions that change only the image config do to it (Docker's semantics).

``apply`` returns a new :class:`ImageConfig` (they are immutable) for ENV, LABEL, MAINTAINER,
USER, EXPOSE, VOLUME, STOPSIGNAL, CMD, ENTRYPOINT, SHELL and HEALTHCHECK, with the instruction as
it took effect (after substitution): what the history records and the cache key hashes.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import replace

from tophan.build import containerfile as cf
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO

    from tophan.build.tree import Tree
    from tophan.image.images import ImageConfig

DEFAULT_SHELL = ["/bin/sh", "-c"]
_HEALTH_FLAGS = {
    "interval": "interval",
    "timeout": "timeout",
    "start-period": "start_period",
    "start-interval": "start_interval",
}


def shell_of(config: ImageConfig) -> list[str]:
    """The shell of shell-form commands: SHELL's, else /bin/sh -c."""
    shell = config.extra.get("Shell")
    if isinstance(shell, list) and shell and all(isinstance(x, str) for x in shell):
        return list(shell)
    return list(DEFAULT_SHELL)


def apply(
    config: ImageConfig, inst: cf.Instruction, env: Mapping[str, str], escape: str
) -> tuple[ImageConfig, str]:
    kw = inst.keyword
    if kw in ("ENV", "LABEL"):
        pairs = [(k, v or "") for k, v in cf.key_values(inst, env, escape)]
        text = f"{kw} " + " ".join(f"{k}={_quote(v)}" for k, v in pairs)
        if kw == "ENV":
            return config.with_env([f"{k}={v}" for k, v in pairs]), text
        return replace(config, labels={**config.labels, **dict(pairs)}), text
    if kw == "MAINTAINER":
        # (it sets the config's author, which is not in ImageConfig: the builder keeps it)
        return config, f"MAINTAINER {inst.rest}"
    if kw == "USER":
        user = _one_word(inst, env, escape)
        return replace(config, user=user), f"USER {user}"
    if kw == "STOPSIGNAL":
        sig = _one_word(inst, env, escape)
        return replace(config, stop_signal=sig), f"STOPSIGNAL {sig}"
    if kw == "EXPOSE":
        ports = [_port(p, inst) for p in cf.expand_words(inst.rest, env, escape)]
        exposed = sorted(set(config.exposed_ports) | set(ports))
        return replace(config, exposed_ports=exposed), "EXPOSE " + " ".join(ports)
    if kw == "VOLUME":
        vols = _list_or_words(inst, env, escape)
        if not vols or any(not v for v in vols):
            raise UsageError(f"{inst.where()}: VOLUME needs a path")
        volumes = sorted(set(config.volumes) | set(vols))
        return replace(config, volumes=volumes), f"VOLUME {json.dumps(vols)}"
    if kw in ("CMD", "ENTRYPOINT"):
        argv = inst.json if inst.json is not None else [*shell_of(config), inst.rest]
        text = f"{kw} {json.dumps(argv)}"
        if kw == "CMD":
            return replace(config, cmd=list(argv)), text
        return replace(config, entrypoint=list(argv)), text
    if kw == "SHELL":
        if not inst.json:
            raise UsageError(
                f"{inst.where()}: SHELL needs the JSON form", 'e.g. SHELL ["/bin/bash", "-c"]'
            )
        extra = {**config.extra, "Shell": list(inst.json)}
        return replace(config, extra=extra), f"SHELL {json.dumps(inst.json)}"
    if kw == "HEALTHCHECK":
        return _healthcheck(config, inst)
    raise UsageError(f"{inst.where()}: {kw} does not change the config")  # a caller's bug


def _quote(value: str) -> str:
    return json.dumps(value) if not value or any(c in value for c in " \t\"'\\$") else value


def _one_word(inst: cf.Instruction, env: Mapping[str, str], escape: str) -> str:
    word = cf.expand(inst.rest, env, escape, where=inst.where())
    if not word:
        raise UsageError(f"{inst.where()}: {inst.keyword} needs an argument")
    return word


def _list_or_words(inst: cf.Instruction, env: Mapping[str, str], escape: str) -> list[str]:
    return [cf.expand(w, env, escape, where=inst.where()) for w in cf.arguments(inst)]


def _port(text: str, inst: cf.Instruction) -> str:
    port, _, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    lo, _, hi = port.partition("-")
    ok = lo.isdigit() and (not hi or hi.isdigit()) and proto in ("tcp", "udp", "sctp")
    if not ok or not 0 < int(lo) < 65536 or (hi and not int(lo) <= int(hi) < 65536):
        raise UsageError(f"{inst.where()}: invalid port {text!r}", "e.g. EXPOSE 80 or 53/udp")
    return f"{port}/{proto}"


def _healthcheck(config: ImageConfig, inst: cf.Instruction) -> tuple[ImageConfig, str]:
    from tophan.image.images import Healthcheck

    test = cf.healthcheck_test(inst)
    if test == ["NONE"]:
        return replace(config, healthcheck=Healthcheck(["NONE"])), "HEALTHCHECK NONE"
    numbers: dict[str, int] = {}
    for name, value in inst.flags:
        what = f"{inst.where()}: HEALTHCHECK --{name}"
        if name == "retries":
            if not value.isdigit():
                raise UsageError(f"{what}: {value!r} is not a number")
            numbers["retries"] = int(value)
        else:
            numbers[_HEALTH_FLAGS[name]] = cf.duration_ns(value, where=inst.where())
    check = Healthcheck(test, **numbers)
    text = f"HEALTHCHECK {json.dumps(check.as_oci(), sort_keys=True)}"
    return replace(config, healthcheck=check), text


def workdir(current: str, inst: cf.Instruction, env: Mapping[str, str], escape: str) -> str:
    """WORKDIR's new directory: relative paths go on from the current one."""
    path = cf.expand(inst.rest, env, escape, where=inst.where())
    if not path:
        raise UsageError(f"{inst.where()}: WORKDIR needs a path")
    return posixpath.normpath(posixpath.join(current or "/", path))


def mkdir_tar(
    out: IO[bytes], tree: Tree, path: str, mtime: int, owner: tuple[int, int] = (0, 0)
) -> None:
    """A layer that makes directory ``path`` (already resolved in ``tree``): its missing
    components 0755 and ``owner``'s, the existing ones as they are (a diff shows its parents)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        rel = ""
        for part in [p for p in path.split("/") if p]:
            rel = f"{rel}/{part}"
            info = tarfile.TarInfo(rel.lstrip("/") + "/")
            info.type = tarfile.DIRTYPE
            st = tree.lstat(rel)
            if st is None:
                info.mode, info.mtime = 0o755, mtime
                info.uid, info.gid = owner
            else:
                info.mode = st.st_mode & 0o7777
                info.uid, info.gid = tree.owner(rel)
                info.mtime = st.st_mtime
                info.pax_headers = {
                    f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                    for k, v in tree.xattrs(rel).items()
                }
            tar.addfile(info)
