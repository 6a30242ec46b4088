"""Run options: what ``docker run`` says about a container, as one typed value.

``RunOptions`` is what ``tophan run``'s flags, an app's spec (TOML file and flags) and API
callers build. ``RunOptions.spec(store)`` resolves it against a store -- the image's layers and
config, the layers' trees, named volumes, capabilities -- into the runtime's :class:`Spec`.

``to_json()``/``from_json()`` are its stored form (what an app keeps in ``spec.json``), versioned
by ``VERSION``; docs/run.md documents every key. ``update()`` applies options named as
``docker run`` names them (``memory``, ``cap_add``, ``security_opt``, ``env``...), the one place
that knows how such a value lands in the typed fields: the CLI's flags, an app's TOML keys and
old stores' flag dicts all go through it.

(Plain classes, not dataclasses: importing ``dataclasses`` costs ~10 ms, a third of a
container start.)
"""

from __future__ import annotations

import os

from tophan.errors import TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from tophan._internal.root import StoreRoot
    from tophan.run.cgroup import Limits
    from tophan.run.container import Bind, Spec

# The stored form's version. Version 1 had none: an app's spec.json held the CLI's raw flag dict
# (``{"opts": {...}, "image": ..., "command": ...}``); ``tophan.app`` migrates it on first read.
VERSION = 2

# ``update()`` keys that are cgroup limits (docker's flag names, ``_`` for ``-``).
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
_IO_KEYS = {"rbps": "device_read_bps", "wbps": "device_write_bps",
            "riops": "device_read_iops", "wiops": "device_write_iops"}  # fmt: skip


class Mount:
    """``-v SOURCE:TARGET[:ro]``: SOURCE is an absolute host path (a bind mount) or the name of
    a volume of the store (created on first use)."""

    def __init__(self, source: str, target: str, readonly: bool = False) -> None:
        self.source = source
        self.target = target
        self.readonly = readonly

    @classmethod
    def parse(cls, text: str) -> Mount:
        from tophan._internal import names

        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise UsageError(
                f"invalid volume {text!r}", "use SRC:DST[:ro], SRC a host path or a name"
            )
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise UsageError(f"invalid volume mode {mode!r} in {text!r}", "use ro or rw")
        if not parts[0].startswith("/") and not names.is_valid(parts[0]):
            raise UsageError(
                f"invalid volume {text!r}: {parts[0]!r} is neither an absolute path nor a name"
            )
        return cls(parts[0], parts[1], mode == "ro")

    @property
    def is_volume(self) -> bool:
        return not self.source.startswith("/")

    def __repr__(self) -> str:
        return f"Mount({self.source!r}, {self.target!r}, readonly={self.readonly})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mount) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


class RunOptions:
    """Everything ``tophan run`` takes, typed. ``None`` and empty values mean "the image's, else
    the default"; the stack is ``image`` or ``layers`` (top first), never both."""

    def __init__(
        self,
        *,
        image: str | None = None,
        layers: Iterable[str] = (),
        command: Iterable[str] = (),
        entrypoint: Iterable[str] | None = None,  # None: the image's; []: none at all
        env: Mapping[str, str | None] | None = None,  # None as a value: unset the image's
        workdir: str | None = None,
        user: str | None = None,  # "user[:group]", names or ids of the container's /etc
        hostname: str | None = None,  # default: the name, else a random one
        name: str | None = None,  # the container's cgroup is named after it
        network: str = "none",  # "none" (a loopback only), "host", "private" or a network
        publish: Iterable[str] = (),  # -p [IP:][HOSTPORT:]CONTAINERPORT[/proto] (private only)
        publish_all: bool = False,  # -P: every port the image EXPOSEs, on free host ports
        volumes: Iterable[Mount] = (),
        tmpfs: Iterable[str] = (),
        read_only: bool = False,
        ulimits: Mapping[str, tuple[int, int]] | None = None,  # name -> (soft, hard); -1: none
        limits: Limits | None = None,
        cap_add: Iterable[str] = (),
        cap_drop: Iterable[str] = (),
        privileged: bool = False,
        seccomp: bool = True,  # Docker's default profile
        no_new_privileges: bool = True,
        no_limits: bool = False,  # no cgroup to be had (rootless): run without limits
        init: bool = False,  # a small init as pid 1: reaps zombies, forwards signals
        interactive: bool = False,  # -i: our stdin goes in (else /dev/null)
        tty: bool = False,  # -t: a pseudo-terminal of its own, proxied to ours
        keep_upper: str | None = None,  # `tophan run`: keep the writable layer's changes here
    ) -> None:
        self.image = image
        self.layers = list(layers)
        self.command = list(command)
        self.entrypoint = None if entrypoint is None else list(entrypoint)
        self.env: dict[str, str | None] = dict(env or {})
        self.workdir = workdir
        self.user = user
        self.hostname = hostname
        self.name = name
        self.network = network
        self.publish = list(publish)
        self.publish_all = publish_all
        self.volumes = list(volumes)
        self.tmpfs = list(tmpfs)
        self.read_only = read_only
        self.ulimits: dict[str, tuple[int, int]] = dict(ulimits or {})
        self.limits = limits
        self.cap_add = list(cap_add)
        self.cap_drop = list(cap_drop)
        self.privileged = privileged
        self.seccomp = seccomp
        self.no_new_privileges = no_new_privileges
        self.no_limits = no_limits
        self.init = init
        self.interactive = interactive
        self.tty = tty
        self.keep_upper = keep_upper

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunOptions) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RunOptions({self.to_json()!r})"

    # -- docker-named options ------------------------------------------------------------------

    def update(
        self, options: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
    ) -> None:
        """Apply options named as ``docker run``'s flags (``_`` for ``-``; ``layer`` for
        ``-l``): values replace, repeatable ones (env, volume, tmpfs, ulimit, layer, caps,
        device throttles) add. ``-e NAME`` takes NAME's value from ``environ`` (default: ours)
        and, where it has none, unsets NAME (as Docker does); env files are read now."""
        environ = os.environ if environ is None else environ
        limit_flags = {k: v for k, v in options.items() if k in LIMIT_KEYS}
        for path in _strs(options.get("env_file", [])):
            for item in read_env_file(path):
                set_env(self.env, item, environ)
        for key, value in options.items():
            if key not in LIMIT_KEYS and key != "env_file":
                self._set(key, value, environ)
        if limit_flags:
            merged = limit_flags_of(self.limits) if self.limits is not None else {}
            for key, value in limit_flags.items():
                if key in _IO_KEYS.values():
                    merged[key] = _strs(merged.get(key, [])) + _strs(value)
                else:
                    merged[key] = value
            self.limits = parse_limits(merged)

    def _set(self, key: str, value: Any, environ: Mapping[str, str]) -> None:
        if key == "layer":
            self.layers += _strs(value)
        elif key == "env":
            for item in _strs(value):
                set_env(self.env, item, environ)
        elif key == "volume":
            self.volumes += [Mount.parse(x) for x in _strs(value)]
        elif key == "tmpfs":
            self.tmpfs += _strs(value)
        elif key == "publish":
            self.publish += _strs(value)
        elif key == "ulimit":
            for item in _strs(value):
                name, pair = parse_ulimit(item)
                self.ulimits[name] = pair
        elif key in ("cap_add", "cap_drop"):
            getattr(self, key).extend(_strs(value))
        elif key == "security_opt":
            for opt in _strs(value):
                self._security_opt(opt)
        elif key == "entrypoint":
            # "" (and old stores' [""]) clears the image's entrypoint, as `--entrypoint ""` does.
            entry = _strs(value) if isinstance(value, list) else [str(value)]
            self.entrypoint = [] if entry in ([], [""]) else entry
        elif key in ("workdir", "user", "hostname", "name", "network", "keep_upper"):
            setattr(self, key, str(value))
        elif key in (
            "privileged",
            "read_only",
            "no_limits",
            "init",
            "interactive",
            "tty",
            "publish_all",
        ):
            setattr(self, key, bool(value))
        else:
            raise UsageError(f"unknown run option {key!r}", "see `tophan run --help`")

    def _security_opt(self, opt: str) -> None:
        key, _, value = opt.replace(":", "=", 1).partition("=")
        if key == "seccomp" and value == "unconfined":
            self.seccomp = False
        elif key == "no-new-privileges":
            self.no_new_privileges = value.lower() not in ("false", "0")
        else:
            raise UsageError(
                f"unsupported --security-opt {opt!r}",
                "tophan knows seccomp=unconfined and no-new-privileges[=false]",
            )

    # -- checks and the runtime's spec ---------------------------------------------------------

    def check(self, what: str = "run") -> None:
        """What can be checked without a store (``spec()`` checks the rest)."""
        from tophan.run import security

        if self.image is not None and self.layers:
            raise UsageError(f"{what}: give either -l layers or an IMAGE, not both")
        if self.image is None and not self.layers:
            raise UsageError(f"{what}: nothing to run", "name an IMAGE or give -l LAYER ...")
        from tophan.run.container import check_network

        check_network(self.network, self.publish or ([1] if self.publish_all else []))
        if self.publish:
            from tophan.net import ports

            ports.parse_all(self.publish)
        security.resolve_caps(self.cap_add, self.cap_drop)
        for t in self.tmpfs:
            if not t.startswith("/"):
                raise UsageError(f"--tmpfs {t!r}: not an absolute path")
        if self.limits is not None:
            self.limits.check()
        if self.keep_upper is not None and os.path.lexists(self.keep_upper):
            raise UsageError(
                f"cannot keep the upper dir at {os.path.abspath(self.keep_upper)}: it exists",
                "pick a new path",
            )

    def spec(self, store: StoreRoot, what: str = "run") -> Spec:
        """Resolve against ``store``: the stack (layers, or the image and its config), then the
        image's defaults (Entrypoint, Cmd, Env, WorkingDir, User) under these options.
        ``spec.digests`` holds the layers, so gc keeps them while the container runs."""
        from tophan.layer.layers import Layers
        from tophan.run import container as runtime
        from tophan.run import security

        self.check(what)
        layer_store = Layers(store)
        config: dict[str, Any] = {}
        if self.layers:
            digests = [layer_store.get(name).digest for name in self.layers]
        else:
            assert self.image is not None
            digests, config = image_stack(store, self.image)
        spec = runtime.Spec([layer_store.tree_path(d) for d in digests], self._argv(config, what))
        spec.digests = digests
        spec.env = self._env(config.get("Env") or [])
        if self.tty:
            # Docker's rule: a terminal is an xterm unless the image or -e says otherwise;
            # without one TERM is never set (nor taken from ours).
            spec.env.setdefault("TERM", "xterm")
        spec.workdir = self.workdir or config.get("WorkingDir") or "/"
        spec.user = self.user or config.get("User") or None
        spec.name = self.name or ""
        spec.hostname = self.hostname or spec.name or os.urandom(6).hex()
        spec.network = self.network
        if self.publish or self.publish_all:
            from tophan.net import ports

            spec.ports = ports.parse_all(self.publish)
            if self.publish_all:
                spec.ports += ports.from_exposed(sorted(config.get("ExposedPorts") or {}))
        spec.readonly_rootfs = self.read_only
        spec.tmpfs = list(self.tmpfs)
        spec.rlimits = dict(self.ulimits)
        spec.binds, spec.volumes = self._binds(store)
        spec.no_limits = self.no_limits
        spec.init = self.init
        spec.tty = self.tty
        spec.interactive = self.interactive
        if self.privileged:
            spec.caps = security.resolve_caps(["ALL"], [])
            spec.seccomp = False
            spec.devices = None  # every device, as docker --privileged
        else:
            spec.caps = security.resolve_caps(self.cap_add, self.cap_drop)
            spec.seccomp = self.seccomp
        spec.no_new_privs = self.no_new_privileges
        spec.limits = self.limits
        spec.check()
        return spec

    def _argv(self, config: Mapping[str, Any], what: str) -> list[str]:
        if self.entrypoint is not None:
            entry, cmd = self.entrypoint, self.command
        else:
            entry = list(config.get("Entrypoint") or [])
            cmd = self.command or list(config.get("Cmd") or [])
        argv = [*entry, *cmd]
        if not argv:
            raise UsageError(
                f"{what}: no command", "give one after the stack, or use an image with Cmd"
            )
        return argv

    def _env(self, image_env: list[str]) -> dict[str, str]:
        from tophan.run.container import DEFAULT_PATH

        env: dict[str, str] = {}
        for item in image_env:
            k, _, v = item.partition("=")
            env[k] = v
        for k, value in self.env.items():
            if value is None:
                env.pop(k, None)
            else:
                env[k] = value
        # Docker's rule: an image without PATH runs with the default one.
        env.setdefault("PATH", DEFAULT_PATH)
        return env

    def _binds(self, store: StoreRoot) -> tuple[list[Bind], list[str]]:
        """The mounts, and the named volumes among them (held while the container runs)."""
        from tophan.run.container import Bind

        out, volumes = [], []
        for m in self.volumes:
            src = m.source
            if m.is_volume:
                from tophan.run.volumes import Volumes

                volumes.append(src)
                src = Volumes(store).ensure(src).data
            elif not os.path.exists(src):
                raise UsageError(f"bind source {src} does not exist", "create it first")
            out.append(Bind(os.path.realpath(src), m.target, m.readonly))
        return out, volumes

    # -- the stored form -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict, ``{"version": 2, ...}`` (docs/run.md, "Stored run options")."""
        return {
            "version": VERSION,
            "image": self.image,
            "layers": list(self.layers),
            "command": list(self.command),
            "entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "env": dict(self.env),
            "workdir": self.workdir,
            "user": self.user,
            "hostname": self.hostname,
            "name": self.name,
            "network": self.network,
            "publish": list(self.publish),
            "publish_all": self.publish_all,
            "volumes": [
                {"source": m.source, "target": m.target, "readonly": m.readonly}
                for m in self.volumes
            ],
            "tmpfs": list(self.tmpfs),
            "read_only": self.read_only,
            "ulimits": {k: [s, h] for k, (s, h) in self.ulimits.items()},
            "limits": None if self.limits is None else limits_to_json(self.limits),
            "cap_add": list(self.cap_add),
            "cap_drop": list(self.cap_drop),
            "privileged": self.privileged,
            "seccomp": self.seccomp,
            "no_new_privileges": self.no_new_privileges,
            "no_limits": self.no_limits,
            "init": self.init,
            "interactive": self.interactive,
            "tty": self.tty,
            "keep_upper": self.keep_upper,
        }

    @classmethod
    def from_json(cls, doc: Any) -> RunOptions:
        """The inverse of ``to_json``; a wrong type or version raises ``TophanError`` naming
        the key. Missing keys take their defaults."""
        r = _Reader(doc, "run options")
        version = r.get("version", int, VERSION)
        if version != VERSION:
            raise TophanError(
                f"run options: version {version} is not {VERSION}",
                "written by another tophan version: recreate them",
            )
        volumes = []
        for i, v in enumerate(r.get("volumes", list, [])):
            m = _Reader(v, f"run options: volumes[{i}]")
            volumes.append(
                Mount(m.req("source", str), m.req("target", str), m.get("readonly", bool, False))
            )
            m.done()
        env = r.get("env", dict, {})
        if not all(isinstance(v, str | None) for v in env.values()):
            raise TophanError("run options: env: values must be strings or null")
        ulimits = {}
        for k, pair in r.get("ulimits", dict, {}).items():
            if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(x) for x in pair)):
                raise TophanError(f"run options: ulimits.{k}: expected [soft, hard]")
            ulimits[k] = (pair[0], pair[1])
        limits = r.get("limits", dict, None)
        entrypoint = r.get("entrypoint", list, None)
        out = cls(
            image=r.get("image", str, None),
            layers=r.strs("layers"),
            command=r.strs("command"),
            entrypoint=None if entrypoint is None else r.strs("entrypoint"),
            env=env,
            workdir=r.get("workdir", str, None),
            user=r.get("user", str, None),
            hostname=r.get("hostname", str, None),
            name=r.get("name", str, None),
            network=r.get("network", str, "none"),
            publish=r.strs("publish"),
            publish_all=r.get("publish_all", bool, False),
            volumes=volumes,
            tmpfs=r.strs("tmpfs"),
            read_only=r.get("read_only", bool, False),
            ulimits=ulimits,
            limits=None if limits is None else limits_from_json(limits),
            cap_add=r.strs("cap_add"),
            cap_drop=r.strs("cap_drop"),
            privileged=r.get("privileged", bool, False),
            seccomp=r.get("seccomp", bool, True),
            no_new_privileges=r.get("no_new_privileges", bool, True),
            no_limits=r.get("no_limits", bool, False),
            init=r.get("init", bool, False),
            interactive=r.get("interactive", bool, False),
            tty=r.get("tty", bool, False),
            keep_upper=r.get("keep_upper", str, None),
        )
        r.done()
        return out


class _Reader:
    """Typed access to one JSON object, with the key in every error; ``done()`` refuses keys
    nobody asked for (a newer format, or a typo in a hand-edited file)."""

    def __init__(self, doc: Any, what: str) -> None:
        if not isinstance(doc, dict):
            raise TophanError(f"{what}: expected an object")
        self.doc = doc
        self.what = what
        self.seen: set[str] = set()

    def get(self, key: str, kind: type, default: Any) -> Any:
        self.seen.add(key)
        value = self.doc.get(key)
        if value is None:
            return default
        if kind is int:
            ok = _is_int(value)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise TophanError(f"{self.what}: {key}: expected {_KIND_NAMES.get(kind, 'a value')}")
        return value

    def req(self, key: str, kind: type) -> Any:
        value = self.get(key, kind, None)
        if value is None:
            raise TophanError(f"{self.what}: {key} is missing")
        return value

    def strs(self, key: str) -> list[str]:
        value = self.get(key, list, [])
        if not all(isinstance(x, str) for x in value):
            raise TophanError(f"{self.what}: {key}: expected a list of strings")
        return list(value)

    def done(self) -> None:
        extra = set(self.doc) - self.seen
        if extra:
            raise TophanError(
                f"{self.what}: unknown keys {', '.join(sorted(extra))}",
                "written by a newer tophan?",
            )


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "an object"}  # fmt: skip


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _strs(value: Any) -> list[str]:
    return [str(x) for x in value] if isinstance(value, list | tuple) else [str(value)]


# -- the image ---------------------------------------------------------------------------------


def image_stack(store: StoreRoot, name: str) -> tuple[list[str], dict[str, Any]]:
    """An image's layer digests (top first) and its config (Entrypoint, Cmd, Env...)."""
    from tophan.image.images import Images

    image = Images(store).get(name)
    return list(reversed(image.layers)), dict(image.config)


# -- single values, as docker writes them ------------------------------------------------------


def set_env(env: dict[str, str | None], item: str, environ: Mapping[str, str]) -> None:
    """``NAME=VALUE`` sets; ``NAME`` alone takes ``environ``'s value, and where ``environ`` has
    none, unsets NAME (the image's value included), as Docker does."""
    k, eq, v = item.partition("=")
    if not k:
        raise UsageError(f"invalid environment variable {item!r}", "use -e NAME=VALUE")
    env[k] = v if eq else environ.get(k)


def read_env_file(path: str) -> list[str]:
    """An env file's ``NAME=VALUE`` / ``NAME`` lines (blank lines and ``#`` comments skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [x.strip() for x in f]
    except OSError as e:
        raise UsageError(f"cannot read env file {path}: {e.strerror}") from e
    return [line for line in lines if line and not line.startswith("#")]


def parse_ulimit(item: str) -> tuple[str, tuple[int, int]]:
    """``NAME=SOFT[:HARD]`` (``-1`` or ``unlimited``: no limit)."""
    name, eq, values = item.partition("=")
    soft, _, hard = values.partition(":")
    try:
        s = -1 if soft in ("-1", "unlimited") else int(soft)
        h = s if not hard else (-1 if hard in ("-1", "unlimited") else int(hard))
    except ValueError:
        s = h = -2
    if not eq or not name or s < -1 or h < -1:
        raise UsageError(
            f"invalid --ulimit {item!r}", "use NAME=SOFT[:HARD], e.g. nofile=1024:2048"
        )
    return name, (s, h)


def parse_limits(flags: Mapping[str, Any]) -> Limits:
    """Limits from docker-named flags (see ``cgroup.parse_limits``), with docker's range for
    ``--pids-limit`` (-1 or 0: unlimited; below -1 refused)."""
    from tophan.run import cgroup

    pids = flags.get("pids_limit")
    if pids is not None:
        try:
            too_low = int(str(pids).strip()) < -1
        except ValueError:
            too_low = False  # parse_limits says what is wrong with it
        if too_low:
            raise UsageError(
                f"--pids-limit {pids}: must be -1 (unlimited) or more", "e.g. --pids-limit 100"
            )
    return cgroup.parse_limits({k: v if isinstance(v, list) else str(v) for k, v in flags.items()})


def limit_flags_of(limits: Limits) -> dict[str, Any]:
    """The docker-named flags that give ``limits`` (what ``parse_limits`` reads back)."""
    out: dict[str, Any] = {}
    for key, value in (
        ("memory", limits.memory),
        ("memory_swap", limits.memory_swap),
        ("cpus", limits.cpus),
        ("cpu_shares", limits.cpu_shares),
        ("cpuset_cpus", limits.cpuset_cpus),
        ("cpuset_mems", limits.cpuset_mems),
        ("pids_limit", limits.pids),
        ("blkio_weight", limits.io_weight),
    ):
        if value is not None:
            out[key] = str(value)
    for io in limits.io_max:
        for rate, value in io.rates():
            out.setdefault(_IO_KEYS[rate], []).append(f"{io.device}:{value}")
    return out


_LIMIT_FIELDS = {"memory": int, "memory_swap": int, "cpus": float, "cpu_shares": int,
                 "cpuset_cpus": str, "cpuset_mems": str, "pids": int, "io_weight": int}  # fmt: skip


def limits_to_json(limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(limits, k) for k in _LIMIT_FIELDS}
    out["io_max"] = [
        {"device": io.device, "major": io.major, "minor": io.minor, **dict(io.rates())}
        for io in limits.io_max
    ]
    return out


def limits_from_json(doc: Any) -> Limits:
    from tophan.run.cgroup import IoMax, Limits

    r = _Reader(doc, "run options: limits")
    values: dict[str, Any] = {}
    for key, kind in _LIMIT_FIELDS.items():
        value = r.get(key, kind, None)
        values[key] = float(value) if kind is float and value is not None else value
    io_max = []
    for i, item in enumerate(r.get("io_max", list, [])):
        d = _Reader(item, f"run options: limits.io_max[{i}]")
        io_max.append(
            IoMax(
                d.req("device", str),
                d.req("major", int),
                d.req("minor", int),
                **{k: d.get(k, int, None) for k in _IO_KEYS},
            )
        )
        d.done()
    r.done()
    limits = Limits(**values, io_max=io_max)
    limits.check()
    return limits
