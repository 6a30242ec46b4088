"""``tophan run``: docker-run-style flags -> a runtime.Spec -> run it, exit with its code.

The flag table is shared with ``tophan app create`` (apps take the same flags plus restart and
health options), so names follow ``docker run``/``podman run`` wherever they have one.
"""

from __future__ import annotations

import os
import sys

from tophan.cli.main import APP_HEALTH_FLAGS
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan._internal.root import StoreRoot
    from tophan.cli.main import Cli
    from tophan.run.container import Bind, Spec

RUN_USAGE = """\
usage: tophan run [options] IMAGE [CMD [ARG...]]
       tophan run [options] -l TOP [-l LAYER...] [--] CMD [ARG...]

Runs CMD in a fresh, isolated, ephemeral view of the layers (like `docker run --rm`) and
exits with its exit code (128+N when killed by signal N; 125 when the container could not be
set up, 126/127 when CMD cannot be run / is not found).

stack:    -l, --layer L           layer, top first (repeat); or name an IMAGE instead
          --keep-upper DIR        keep the writable layer's changes in DIR afterwards
process:  -e, --env K[=V]         environment (repeat); --env-file FILE
          -w, --workdir DIR       -u, --user USER[:GROUP]     --entrypoint CMD
          --ulimit NAME=SOFT[:HARD]   --hostname NAME   --name NAME
mounts:   -v, --volume SRC:DST[:ro]   (SRC: absolute host path, or a volume name)
          --tmpfs DST             --read-only (read-only root)
network:  --network none|host     (none: only a loopback interface; the default)
limits:   -m, --memory SIZE       --memory-swap SIZE   --cpus N   -c, --cpu-shares N
          --cpuset-cpus LIST      --cpuset-mems LIST   --pids-limit N   --blkio-weight N
          --device-read-bps|--device-write-bps|--device-read-iops|--device-write-iops DEV:RATE
          --no-limits             run without limits where no cgroup can be had (rootless)
security: --cap-add CAP  --cap-drop CAP  (ALL allowed)   --privileged
          --security-opt seccomp=unconfined | no-new-privileges=false
accepted for habit's sake: --rm (always), -i (stdin is always passed), -t (your terminal is
the container's: no pseudo-terminal is made)
"""

# flag -> (key, takes a value, repeatable)
FLAGS: dict[str, tuple[str, bool, bool]] = {
    "-l": ("layer", True, True),
    "--layer": ("layer", True, True),
    "-e": ("env", True, True),
    "--env": ("env", True, True),
    "--env-file": ("env_file", True, True),
    "-v": ("volume", True, True),
    "--volume": ("volume", True, True),
    "--tmpfs": ("tmpfs", True, True),
    "-w": ("workdir", True, False),
    "--workdir": ("workdir", True, False),
    "-u": ("user", True, False),
    "--user": ("user", True, False),
    "--entrypoint": ("entrypoint", True, False),
    "--hostname": ("hostname", True, False),
    "--name": ("name", True, False),
    "--network": ("network", True, False),
    "--net": ("network", True, False),
    "--ulimit": ("ulimit", True, True),
    "--keep-upper": ("keep_upper", True, False),
    "-m": ("memory", True, False),
    "--memory": ("memory", True, False),
    "--memory-swap": ("memory_swap", True, False),
    "--cpus": ("cpus", True, False),
    "-c": ("cpu_shares", True, False),
    "--cpu-shares": ("cpu_shares", True, False),
    "--cpuset-cpus": ("cpuset_cpus", True, False),
    "--cpuset-mems": ("cpuset_mems", True, False),
    "--pids-limit": ("pids_limit", True, False),
    "--blkio-weight": ("blkio_weight", True, False),
    "--device-read-bps": ("device_read_bps", True, True),
    "--device-write-bps": ("device_write_bps", True, True),
    "--device-read-iops": ("device_read_iops", True, True),
    "--device-write-iops": ("device_write_iops", True, True),
    "--cap-add": ("cap_add", True, True),
    "--cap-drop": ("cap_drop", True, True),
    "--security-opt": ("security_opt", True, True),
    "--privileged": ("privileged", False, False),
    "--read-only": ("read_only", False, False),
    "--no-limits": ("no_limits", False, False),
    "--rm": ("rm", False, False),
    "-d": ("detach", False, False),
    "--detach": ("detach", False, False),
    "-i": ("interactive", False, False),
    "--interactive": ("interactive", False, False),
    "-t": ("tty", False, False),
    "--tty": ("tty", False, False),
}
LIMIT_KEYS = (
    "memory",
    "memory_swap",
    "cpus",
    "cpu_shares",
    "cpuset_cpus",
    "cpuset_mems",
    "pids_limit",
    "blkio_weight",
    "device_read_bps",
    "device_write_bps",
    "device_read_iops",
    "device_write_iops",
)


class Parsed:
    def __init__(self) -> None:
        self.opts: dict[str, Any] = {}
        self.image: str | None = None
        self.command: list[str] = []


def parse_run_args(argv: list[str], flags: dict[str, tuple[str, bool, bool]], what: str) -> Parsed:
    """Options up to the IMAGE (or, with -l, up to the command); the rest is the command."""
    out = Parsed()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            rest = argv[i:]
            if not out.opts.get("layer") and out.image is None and rest:
                out.image, rest = rest[0], rest[1:]
            out.command = rest
            return out
        if not a.startswith("-") or a == "-":
            if out.opts.get("layer"):
                out.command = argv[i - 1 :]
            else:
                out.image = a
                rest = argv[i:]
                out.command = rest[1:] if rest[:1] == ["--"] else rest
            return out
        i = _take_flag(out, a, argv, i, flags, what)
    return out


def _take_flag(
    out: Parsed,
    a: str,
    argv: list[str],
    i: int,
    flags: dict[str, tuple[str, bool, bool]],
    what: str,
) -> int:
    key = a.partition("=")[0]
    if key not in flags and not a.startswith("--") and len(a) > 2:
        # Clustered short booleans, like -it.
        for ch in a[1:]:
            spec = flags.get(f"-{ch}")
            if spec is None or spec[1]:
                raise UsageError(f"{what}: unknown option {a}", f"see `tophan {what} --help`")
            out.opts[spec[0]] = True
        return i
    from tophan.cli.main import take_option

    return take_option(out.opts, flags, a, argv, i, what, f"see `tophan {what} --help`")


# -- building the spec -------------------------------------------------------------------------


def build_spec(store: StoreRoot, p: Parsed, what: str) -> Spec:
    """Resolve the stack (layers or image), apply image defaults, then the flags."""
    from tophan.layer.layers import Layers
    from tophan.run import container as runtime

    layer_store = Layers(store)
    o = p.opts
    config: dict[str, Any] = {}
    if o.get("layer"):
        if p.image is not None:
            raise UsageError(f"{what}: give either -l layers or an IMAGE, not both")
        layers = [layer_store.get(name) for name in o["layer"]]
        digests = [layer.digest for layer in layers]
    elif p.image is not None:
        digests, config = image_stack(store, p.image)
    else:
        raise UsageError(f"{what}: nothing to run", "name an IMAGE or give -l LAYER ...")
    argv = _command(p, config, what)
    spec = runtime.Spec(lowers=[layer_store.tree_path(d) for d in digests], argv=argv)
    spec.digests = digests
    spec.env = _env(config.get("Env") or [], o)
    spec.workdir = o.get("workdir") or config.get("WorkingDir") or "/"
    spec.user = o.get("user") or config.get("User") or None
    spec.name = o.get("name") or ""
    spec.hostname = o.get("hostname") or spec.name or os.urandom(6).hex()
    spec.network = o.get("network", "none")
    spec.readonly_rootfs = bool(o.get("read_only"))
    spec.tmpfs = list(o.get("tmpfs", []))
    spec.rlimits = _ulimits(o.get("ulimit", []))
    spec.binds, spec.volumes = _binds(store, o.get("volume", []))
    spec.no_limits = bool(o.get("no_limits"))
    _security(spec, o)
    spec.limits = _limits(o)
    spec.check()
    return spec


def image_stack(store: StoreRoot, name: str) -> tuple[list[str], dict[str, Any]]:
    """An image's layer digests (top first) and its config (Entrypoint, Cmd, Env...)."""
    from tophan.image.images import Images

    image = Images(store).get(name)
    return list(reversed(image.layers)), dict(image.config)


def _command(p: Parsed, config: dict[str, Any], what: str) -> list[str]:
    entry = config.get("Entrypoint") or []
    if "entrypoint" in p.opts:
        given = p.opts["entrypoint"]
        entry = list(given) if isinstance(given, list) else [given] if given else []
        cmd = p.command
    else:
        cmd = p.command or list(config.get("Cmd") or [])
    argv = list(entry) + list(cmd)
    if not argv:
        raise UsageError(
            f"{what}: no command", "give one after the stack, or use an image with Cmd"
        )
    return argv


def _env(image_env: list[str], o: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in image_env:
        k, _, v = item.partition("=")
        env[k] = v
    for path in o.get("env_file", []):
        try:
            with open(path, encoding="utf-8") as f:
                lines = [x.strip() for x in f]
        except OSError as e:
            raise UsageError(f"cannot read env file {path}: {e.strerror}") from e
        for line in lines:
            if line and not line.startswith("#"):
                _set_env(env, line)
    for item in o.get("env", []):
        _set_env(env, item)
    return env


def _set_env(env: dict[str, str], item: str) -> None:
    k, eq, v = item.partition("=")
    if not k:
        raise UsageError(f"invalid environment variable {item!r}", "use -e NAME=VALUE")
    if eq:
        env[k] = v
    elif k in os.environ:
        env[k] = os.environ[k]  # docker: `-e NAME` passes the caller's value through


def _ulimits(items: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for item in items:
        name, eq, values = item.partition("=")
        soft, _, hard = values.partition(":")
        try:
            s = -1 if soft in ("-1", "unlimited") else int(soft)
            h = s if not hard else (-1 if hard in ("-1", "unlimited") else int(hard))
        except ValueError:
            s = h = -2
        if not eq or s < -1 or h < -1:
            raise UsageError(
                f"invalid --ulimit {item!r}", "use NAME=SOFT[:HARD], e.g. nofile=1024:2048"
            )
        out[name] = (s, h)
    return out


def _binds(store: StoreRoot, items: list[str]) -> tuple[list[Bind], list[str]]:
    """The mounts of ``-v`` items, and the named volumes among them (held while running)."""
    from tophan._internal import names
    from tophan.run.container import Bind
    from tophan.run.volumes import Volumes

    out, volumes = [], []
    for item in items:
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise UsageError(
                f"invalid volume {item!r}", "use SRC:DST[:ro], SRC a host path or a name"
            )
        src, dst = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise UsageError(f"invalid volume mode {mode!r} in {item!r}", "use ro or rw")
        if not src.startswith("/"):
            if not names.is_valid(src):
                raise UsageError(
                    f"invalid volume {item!r}: {src!r} is neither an absolute path nor a name"
                )
            volumes.append(src)
            src = Volumes(store).ensure(src).data
        elif not os.path.exists(src):
            raise UsageError(f"bind source {src} does not exist", "create it first")
        out.append(Bind(os.path.realpath(src), dst, mode == "ro"))
    return out, volumes


def _security(spec: Spec, o: dict[str, Any]) -> None:
    from tophan.run import security

    if o.get("privileged"):
        spec.caps = security.resolve_caps(["ALL"], [])
        spec.seccomp = False
    else:
        spec.caps = security.resolve_caps(o.get("cap_add", []), o.get("cap_drop", []))
    for opt in o.get("security_opt", []):
        key, _, value = opt.replace(":", "=", 1).partition("=")
        if key == "seccomp" and value == "unconfined":
            spec.seccomp = False
        elif key == "no-new-privileges":
            spec.no_new_privs = value.lower() not in ("false", "0")
        else:
            raise UsageError(
                f"unsupported --security-opt {opt!r}",
                "tophan knows seccomp=unconfined and no-new-privileges[=false]",
            )


def _limits(o: dict[str, Any]) -> Any:
    from tophan.run import cgroup

    flags = {k: o[k] for k in LIMIT_KEYS if k in o}
    return cgroup.parse_limits(flags)


# -- the command -------------------------------------------------------------------------------

APP_HINT = "a supervised, detached container is an app: `tophan app create NAME ...` + `app start`"
# docker run flags that only make sense for something that outlives the command: apps take them
# (app create's own table replaces these entries), `run` refuses them with a hint.
APP_ONLY_FLAGS = {
    "--restart": True, "--stop-signal": True, "--stop-timeout": True, "--log-opt": True,
    **{flag: spec[1] for flag, spec in APP_HEALTH_FLAGS.items()},
}  # fmt: skip
FLAGS.update({k: (f"app_only{k}", v, False) for k, v in APP_ONLY_FLAGS.items()})


def main(cli: Cli, command: str, argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        sys.stderr.write(RUN_USAGE)
        return 0
    from tophan.run import container as runtime

    p = parse_run_args(argv, FLAGS, "run")
    if p.opts.get("detach"):
        raise UsageError("run: --detach is not supported", APP_HINT)
    for key in p.opts:
        if key.startswith("app_only"):
            raise UsageError(f"run: {key[8:]} applies to apps", APP_HINT)
    store = cli.store()
    spec = build_spec(store, p, "run")
    # Our own stdout holds nothing (the container writes to the real one); flush anyway so
    # that nothing we buffered interleaves with its output.
    sys.stdout.flush()
    return runtime.run(store, spec, keep_upper=p.opts.get("keep_upper"))
