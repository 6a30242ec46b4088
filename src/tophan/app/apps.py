"""Apps: a named, stored run spec plus a supervisor (``tophand``) that keeps it running.

Layout: ``<root>/apps/<name>/``::

    spec.json    what `app create` validated (``AppSpec.to_json``): the run options
                 (``RunOptions.to_json``), restart policy, health check, stop signal and
                 timeout, log rotation; versioned, and migrated from the old form on first read
    state.json   written atomically by the supervisor: status, pids, exit codes, health...
    lock         flock'ed (exclusive) by the live supervisor, and only by it
    logs/        app.log (+ app.log.1, .2... after rotation)

There is no daemon and no socket. The CLI finds a supervisor through ``state.json`` and talks to
it with signals (SIGTERM: stop). Liveness is never taken from the state
file: a supervisor is alive exactly when the lock is held, which the kernel releases the moment
it dies, however it dies. A state that says "running" with the lock free is stale, and is shown
as what it is.
"""

from __future__ import annotations

import json
import os
import time

from tophan._internal import names
from tophan._internal.fs import atomic_write
from tophan.errors import Exists, InUse, NotFound, TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan._internal.root import StoreRoot
    from tophan.app.health import Check
    from tophan.run.container import Spec
    from tophan.run.options import RunOptions

RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
SPEC_VERSION = 2  # of spec.json; RunOptions has the same number (version 1: a raw flag dict)
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_LOG_MAX = 10 << 20
DEFAULT_LOG_FILES = 3
# An app's spec holds its environment (passwords, tokens) and its logs whatever it prints: both
# are for the store's owner only, whatever the umask (chmod'ed, not left to the umask).
PRIVATE = 0o600
PRIVATE_DIR = 0o700
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class RestartPolicy:
    """``no``, ``on-failure`` (at most ``max_retries`` restarts; 0: no limit) or ``always``."""

    def __init__(self, policy: str = "no", max_retries: int = 0) -> None:
        self.policy = policy
        self.max_retries = max_retries

    @classmethod
    def parse(cls, text: str, what: str) -> RestartPolicy:
        """Docker's ``--restart`` value: ``no``, ``on-failure[:N]``, ``always``,
        ``unless-stopped``."""
        policy, _, count = text.partition(":")
        if policy not in RESTART_POLICIES:
            raise UsageError(
                f"{what}: unknown restart policy {text!r}", "use no, on-failure[:N] or always"
            )
        if count and (policy != "on-failure" or not count.isdigit()):
            raise UsageError(f"{what}: invalid restart policy {text!r}", "only on-failure takes :N")
        if policy == "unless-stopped":
            policy = "always"  # without a daemon that restarts apps at boot, they are the same
        return cls(policy, int(count) if count else 0)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_retries": self.max_retries}


class LogOptions:
    """Rotation of ``logs/app.log``: at ``max_size`` bytes, keeping ``max_files`` files."""

    def __init__(self, max_size: int = DEFAULT_LOG_MAX, max_files: int = DEFAULT_LOG_FILES) -> None:
        self.max_size = max_size
        self.max_files = max_files

    def to_json(self) -> dict[str, Any]:
        return {"max_size": self.max_size, "max_files": self.max_files}


class AppSpec:
    """What ``app create`` stores: the run options plus what only a supervised app has.

    ``health`` is the app's check (None: the image's, unless ``no_healthcheck``);
    ``stop_signal`` None is the image's StopSignal, else SIGTERM; ``stop_timeout`` None is
    ``DEFAULT_STOP_TIMEOUT``."""

    def __init__(
        self,
        run: RunOptions,
        *,
        restart: RestartPolicy | None = None,
        health: Check | None = None,
        no_healthcheck: bool = False,
        stop_signal: str | None = None,
        stop_timeout: float | None = None,
        log: LogOptions | None = None,
        name: str = "",
        created_at: float = 0.0,
        scan_allow: list[str] | None = None,
    ) -> None:
        self.run = run
        # Vulnerability ids a deploy scan policy lets this app start with (accepted risks).
        self.scan_allow = list(scan_allow or [])
        self.restart = restart or RestartPolicy()
        self.health = health
        self.no_healthcheck = no_healthcheck
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.log = log or LogOptions()
        self.name = name
        self.created_at = created_at

    def to_json(self) -> dict[str, Any]:
        """``{"version": 2, "name", "created_at", "run": {RunOptions}, "restart", "health",
        "no_healthcheck", "stop_signal", "stop_timeout", "log"}`` (docs/run.md)."""
        return {
            "version": SPEC_VERSION,
            "name": self.name,
            "created_at": self.created_at,
            "run": self.run.to_json(),
            "restart": self.restart.to_json(),
            "health": None if self.health is None else self.health.as_dict(),
            "no_healthcheck": self.no_healthcheck,
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
            "log": self.log.to_json(),
            "scan_allow": self.scan_allow,
        }

    @classmethod
    def from_json(cls, doc: Any) -> AppSpec:
        """The stored form; an old one (version 1: the CLI's flag dict) is converted."""
        from tophan.app.health import Check
        from tophan.run.options import RunOptions

        if isinstance(doc, dict) and "version" not in doc:
            return cls.from_v1(doc)
        if not isinstance(doc, dict) or doc.get("version") != SPEC_VERSION:
            version = doc.get("version") if isinstance(doc, dict) else None
            raise TophanError(
                f"app spec version {version!r} is not {SPEC_VERSION}",
                "written by another tophan version: recreate the app",
            )
        known = {"version", "name", "created_at", "run", "restart", "health", "no_healthcheck",
                 "stop_signal", "stop_timeout", "log", "scan_allow"}  # fmt: skip
        extra = set(doc) - known
        if extra:
            raise TophanError(f"app spec: unknown keys {', '.join(sorted(extra))}")
        try:
            restart = doc.get("restart") or {}
            log = doc.get("log") or {}
            health = doc.get("health")
            stop_timeout = doc.get("stop_timeout")
            return cls(
                RunOptions.from_json(doc.get("run")),
                restart=RestartPolicy(str(restart["policy"]), int(restart["max_retries"]))
                if restart
                else None,
                health=Check.from_dict(health) if health else None,
                no_healthcheck=bool(doc.get("no_healthcheck")),
                stop_signal=doc.get("stop_signal") or None,
                stop_timeout=None if stop_timeout is None else float(stop_timeout),
                log=LogOptions(int(log["max_size"]), int(log["max_files"])) if log else None,
                name=str(doc.get("name") or ""),
                created_at=float(doc.get("created_at") or 0.0),
                scan_allow=[str(x) for x in doc.get("scan_allow") or []],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TophanError(f"app spec: malformed ({type(e).__name__}: {e})") from e

    @classmethod
    def from_v1(cls, doc: dict[str, Any]) -> AppSpec:
        """An app spec as tophan stored it before RunOptions: ``{"opts": {flag key: value},
        "image" | "layers", "command", "restart", "health", "stop_signal", "stop_timeout",
        "log", "no_healthcheck", "name", "created_at"}``."""
        from tophan.app.health import Check
        from tophan.run.options import RunOptions

        run = RunOptions(
            image=doc.get("image"), layers=doc.get("layers") or (), command=doc.get("command") or ()
        )
        opts = dict(doc.get("opts") or {})
        for habit in ("rm", "interactive", "tty", "detach", "file"):
            opts.pop(habit, None)
        run.update(opts)
        restart = doc.get("restart")
        log = doc.get("log") or {}
        stop_timeout = doc.get("stop_timeout")
        return cls(
            run,
            restart=RestartPolicy(restart["policy"], int(restart.get("max_retries", 0)))
            if restart
            else None,
            health=Check.from_dict(doc["health"]) if doc.get("health") else None,
            no_healthcheck=bool(doc.get("no_healthcheck")),
            stop_signal=doc.get("stop_signal") or None,
            stop_timeout=None if stop_timeout is None else float(stop_timeout),
            log=LogOptions(
                int(log.get("max_size", DEFAULT_LOG_MAX)),
                int(log.get("max_files", DEFAULT_LOG_FILES)),
            ),
            name=str(doc.get("name") or ""),
            created_at=float(doc.get("created_at") or 0.0),
            scan_allow=list(doc.get("scan_allow") or []),
        )


class App:
    def __init__(self, store: StoreRoot, name: str, d: str, spec: AppSpec) -> None:
        self.store = store
        self.name = name
        self.dir = d
        self.spec = spec

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def log_path(self) -> str:
        return self.path("logs", "app.log")

    def state(self) -> dict[str, Any]:
        """The last state the supervisor wrote, with ``alive`` from the lock, not the file."""
        try:
            with open(self.path("state.json"), encoding="utf-8") as f:
                state: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            state = {"status": "created"}
        alive = self.supervisor_alive()
        state["alive"] = alive
        if not alive and state.get("status") in ("starting", "running", "restarting", "stopping"):
            state["stale_status"] = state["status"]
            state["status"] = "dead"  # the supervisor died without writing its end
        return state

    def supervisor_alive(self) -> bool:
        from tophan._internal.fs import flock_held

        return flock_held(self.path("lock"))  # tophand holds it exclusively while it lives

    def run_spec(self) -> Spec:
        """The runtime's spec for one start: a fresh container name, the app's name as the
        default hostname."""
        spec = self.spec.run.spec(self.store, f"app {self.name}")
        spec.name = f"app-{self.name}-{os.urandom(4).hex()}"
        # Nobody reads a terminal of an app's (a hand-edited spec): its output goes to the log.
        spec.tty = spec.interactive = False
        if not self.spec.run.hostname:
            spec.hostname = self.name
        return spec

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec.to_json(), "state": self.state()}


class Apps:
    def __init__(self, store: StoreRoot) -> None:
        self.store = store
        self.top = store.path("apps")

    def _dir(self, name: str) -> str:
        return os.path.join(self.top, names.check(name, "app"))

    def get(self, name: str) -> App:
        d = self._dir(name)
        path = os.path.join(d, "spec.json")
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError as e:
            raise NotFound(f"no such app: {name}", "see `tophan app ps -a`") from e
        except PermissionError as e:
            raise _private(f"app {name}") from e
        except (OSError, ValueError) as e:
            raise TophanError(f"app {name}: unreadable spec.json ({e})", "recreate the app") from e
        try:
            spec = AppSpec.from_json(doc)
        except TophanError as e:
            raise TophanError(f"app {name}: {e.message}", e.hint or "recreate the app") from e
        app = App(self.store, name, d, spec)
        if isinstance(doc, dict) and "version" not in doc:
            # An older version's app: the same write makes it private.
            _write_migrated(path, spec)
            make_private(app)
        return app

    def all(self) -> list[App]:
        try:
            entries = sorted(os.listdir(self.top))
        except FileNotFoundError:
            return []
        except PermissionError as e:
            raise _private("apps") from e
        out = []
        for name in entries:
            if names.is_valid(name):
                try:
                    out.append(self.get(name))
                except TophanError:
                    continue
        return out

    def create(self, name: str, spec: AppSpec) -> App:
        """Validate (by building the run spec once) and store a new app."""
        d = self._dir(name)
        if spec.run.keep_upper is not None:
            raise UsageError(f"app {name}: --keep-upper applies to `tophan run` only")
        if spec.run.tty or spec.run.interactive:
            # Its output goes to the log, its stdin is /dev/null: there is nobody to attach.
            raise UsageError(
                f"app {name}: an app has no terminal or stdin",
                "use `tophan app exec -it` to work in it, `tophan run -it` for a session",
            )
        spec.name, spec.created_at = name, time.time()
        App(self.store, name, d, spec).run_spec()  # every error surfaces now, not at start
        os.makedirs(self.top, PRIVATE_DIR, exist_ok=True)
        os.chmod(self.top, PRIVATE_DIR)
        staging = self.store.staging("app")
        try:
            os.mkdir(os.path.join(staging.path, "logs"), PRIVATE_DIR)
            atomic_write(os.path.join(staging.path, "spec.json"), _spec_bytes(spec), PRIVATE)
            os.close(os.open(os.path.join(staging.path, "lock"), _CREATE, PRIVATE))
            os.chmod(os.path.join(staging.path, "logs"), PRIVATE_DIR)
            os.chmod(staging.path, PRIVATE_DIR)
            with self.store.lock():
                if os.path.exists(d):
                    raise Exists(f"app exists: {name}", "pick another name or `app rm` it first")
                os.rename(staging.path, d)
        finally:
            staging.discard()
        return self.get(name)

    # -- lifecycle (the CLI's side: spawn the supervisor, signal it) ---------------------------

    def start(self, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Start the app's supervisor; returns once the app runs, or raises with its error."""
        app = self.get(name)
        if app.supervisor_alive():
            return app.state()
        make_private(app)
        cleanup_leftovers(app)
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            _spawn_supervisor(self.store, name, w)
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as f:
            reply = f.read().decode(errors="replace").strip()
        if reply.startswith("error "):
            code, _, msg = reply[6:].partition(" ")
            err = TophanError(msg)
            err.rc = int(code) if code.isdigit() else 1
            raise err
        if reply != "ok":
            raise TophanError(
                f"app {name}: the supervisor died while starting",
                f"see {app.path('logs', 'tophand.log')}",
            )
        return app.state()

    def stop(self, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Ask the supervisor to stop (stop signal, grace period, then kill the whole cgroup)
        and wait until it has exited."""
        import signal

        app = self.get(name)
        state = app.state()
        if not state["alive"]:
            cleanup_leftovers(app)
            return app.state()
        grace = app.spec.stop_timeout
        if grace is None:
            grace = DEFAULT_STOP_TIMEOUT
        if timeout is not None:
            grace = timeout
            atomic_write(app.path("stop_timeout"), f"{grace}\n".encode(), PRIVATE)
        pid = int(state.get("supervisor", 0))
        if pid <= 0:
            raise TophanError(f"app {name}: supervisor pid unknown", "retry in a moment")
        os.kill(pid, signal.SIGTERM)
        _wait_unlocked(app, grace + 30.0)
        return app.state()

    def restart(self, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        self.stop(name, timeout=timeout)
        return self.start(name)

    def remove(self, name: str, *, force: bool = False) -> None:
        app = self.get(name)
        if app.supervisor_alive():
            if not force:
                raise InUse(f"app {name} is running", "stop it first, or use `app rm -f`")
            self.stop(name, timeout=0)
        cleanup_leftovers(app)
        self.store.trash(app.dir)


def _private(what: str) -> TophanError:
    return TophanError(
        f"{what}: permission denied: apps are private to the store's owner",
        "run as the user who owns the store",
    )


def _spec_bytes(spec: AppSpec) -> bytes:
    return json.dumps(spec.to_json(), indent=1, sort_keys=True).encode() + b"\n"


def _write_migrated(path: str, spec: AppSpec) -> None:
    """Replace an old-format spec.json with its migrated form (atomically: a reader sees one or
    the other). A store this user may not write keeps the old form, migrated on each read."""
    try:
        atomic_write(path, _spec_bytes(spec), PRIVATE)
    except OSError:
        pass


def _spawn_supervisor(store: StoreRoot, name: str, ready_fd: int) -> None:
    import subprocess
    import sys

    os.set_inheritable(ready_fd, True)
    log = os.open(
        os.path.join(store.path("apps", name, "logs"), "tophand.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
        PRIVATE,
    )
    try:
        # The supervisor daemonizes (forks, new session) so that it is nobody's child: this
        # first process exits at once and we reap it here.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tophan.app.supervisor",
                "--root",
                store.root,
                "--ready-fd",
                str(ready_fd),
                name,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(ready_fd,),
            check=False,
        )
    finally:
        os.close(log)


def _wait_unlocked(app: App, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while app.supervisor_alive():
        if time.monotonic() > deadline:
            raise TophanError(f"app {app.name}: the supervisor did not stop", "see its log")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def cleanup_leftovers(app: App) -> None:
    """After a supervisor died without cleaning up: kill and remove its cgroup, record it."""
    state = app.state()
    if state["alive"]:
        return
    name = state.get("cgroup")
    if name:
        from tophan.run import cgroup

        try:
            cg = cgroup.Cgroup.open(name)
        except TophanError:
            cg = None
        if cg is not None:
            cg.kill()
            cg.remove()
    if state.get("status") == "dead":
        app.store.clean_tmp()  # its run dir, unlocked since it died
        state.pop("alive", None)
        state["status"] = "exited"
        state["error"] = state.get("error") or "the supervisor died"
        state["pid"] = 0
        state["cgroup"] = ""
        write_state(app, state)


def make_private(app: App) -> None:
    """Apps made by older versions were readable by every local user: the apps dir, the app's
    dir and logs become 0700, its files 0600 (at each start, and when its spec is migrated)."""
    import stat

    for d in (os.path.dirname(app.dir), app.dir, app.path("logs")):
        try:
            os.chmod(d, PRIVATE_DIR)
        except FileNotFoundError:
            continue
        except PermissionError:
            return  # not the owner's: starting it fails on its own, with the reason
        for entry in os.scandir(d):
            # Regular files only: never follow a link out of the app's dir.
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                if stat.S_IMODE(st.st_mode) & 0o077:
                    os.chmod(entry.path, stat.S_IMODE(st.st_mode) & PRIVATE)


def write_state(app: App, state: dict[str, Any]) -> None:
    state = {k: v for k, v in state.items() if k not in ("alive", "stale_status")}
    atomic_write(
        app.path("state.json"), json.dumps(state, sort_keys=True).encode() + b"\n", PRIVATE
    )


# -- spec files (TOML) -------------------------------------------------------------------------


# TOML key -> (run-option key, expected type). Values are checked here, with the key in the
# message, and checked again (all together) by building the run spec once at create time.
_TOP_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "env_file": ("env_file", (str, list)),
    "workdir": ("workdir", str),
    "user": ("user", (str, int)),
    "hostname": ("hostname", str),
    "network": ("network", str),
    "ports": ("publish", list),  # -p: "[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]"
    "read_only": ("read_only", bool),
    "volumes": ("volume", list),
    "tmpfs": ("tmpfs", list),
    "init": ("init", bool),
}
_RESOURCE_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "memory": ("memory", (str, int)),
    "memory_swap": ("memory_swap", (str, int)),
    "cpus": ("cpus", (int, float, str)),
    "cpu_shares": ("cpu_shares", (int, str)),
    "cpuset_cpus": ("cpuset_cpus", str),
    "cpuset_mems": ("cpuset_mems", str),
    "pids_limit": ("pids_limit", (int, str)),
    "blkio_weight": ("blkio_weight", (int, str)),
    "device_read_bps": ("device_read_bps", list),
    "device_write_bps": ("device_write_bps", list),
    "device_read_iops": ("device_read_iops", list),
    "device_write_iops": ("device_write_iops", list),
}
_SECURITY_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "cap_add": ("cap_add", list),
    "cap_drop": ("cap_drop", list),
    "privileged": ("privileged", bool),
}
_HEALTH_KEYS = ("cmd", "http", "tcp", "interval", "timeout", "retries", "start_period")


class _Where:
    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, message: str, hint: str | None = None) -> UsageError:
        return UsageError(f"{self.path}: {key}: {message}", hint)


# Apps are services: each gets its own network namespace on the default private network unless
# its spec says otherwise (`tophan run` keeps "none"). Specs stored before this default name
# their network explicitly, so they keep the one they had.
DEFAULT_NETWORK = "private"


def new_spec() -> AppSpec:
    """An empty app spec, with the defaults an app has and a bare run does not."""
    from tophan.run.options import RunOptions

    return AppSpec(RunOptions(network=DEFAULT_NETWORK))


def load_spec_file(path: str) -> AppSpec:
    """Read an app spec (TOML, docs/run.md). Errors name the file and the key."""
    import tomllib

    w = _Where(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise UsageError(f"cannot read app spec {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from e
    # The keys are checked one by one into the old flag-dict form, which AppSpec reads.
    spec: dict[str, Any] = {"opts": {}}
    for key, value in doc.items():
        _load_key(w, spec, key, value)
    spec["opts"].setdefault("network", DEFAULT_NETWORK)
    try:
        return AppSpec.from_v1(spec)
    except TophanError as e:
        raise UsageError(f"{path}: {e.message}", e.hint) from e


def _load_key(w: _Where, spec: dict[str, Any], key: str, value: Any) -> None:
    opts = spec["opts"]
    if key in _TOP_KEYS:
        _put(w, opts, key, value, _TOP_KEYS[key])
    elif key in ("resources", "security", "health", "restart", "log"):
        if not isinstance(value, dict):
            raise w.error(key, "must be a table", f"write [{key}] and its keys below it")
        {
            "resources": _load_resources,
            "security": _load_security,
            "health": _load_health,
            "restart": _load_restart,
            "log": _load_log,
        }[key](w, spec, value)
    elif key == "name":
        _typed(w, key, value, str)
    elif key == "image":
        spec["image"] = _typed(w, key, value, str)
    elif key == "layers":
        spec["layers"] = _strings(w, key, value)
    elif key == "scan_allow":
        spec["scan_allow"] = _strings(w, key, value)
    elif key in ("command", "entrypoint"):
        argv = ["/bin/sh", "-c", value] if isinstance(value, str) else _strings(w, key, value)
        if key == "command":
            spec["command"] = argv
        else:
            opts["entrypoint"] = argv
    elif key == "env":
        opts["env"] = _env_items(w, value)
    elif key == "ulimits":
        opts["ulimit"] = _ulimit_items(w, value)
    elif key == "stop_signal":
        spec["stop_signal"] = signal_name(_typed(w, key, value, str), f"{w.path}: {key}")
    elif key == "stop_timeout":
        from tophan.app.health import parse_duration

        spec["stop_timeout"] = parse_duration(value, f"{w.path}: {key}")
    else:
        raise w.error(key, "unknown key", _known_keys_hint())


def _known_keys_hint() -> str:
    top = [
        "name",
        "image",
        "layers",
        "command",
        "entrypoint",
        "env",
        "ulimits",
        "stop_signal",
        "stop_timeout",
        "scan_allow",
        *_TOP_KEYS,
        "[resources]",
        "[security]",
        "[health]",
        "[restart]",
        "[log]",
    ]
    return "known keys: " + ", ".join(top)


def _put(w: _Where, opts: dict[str, Any], key: str, value: Any, rule: tuple[str, Any]) -> None:
    dest, kind = rule
    _typed(w, key, value, kind)
    if isinstance(value, list):
        value = _strings(w, key, value)
    elif not isinstance(value, bool):
        value = str(value)
    opts[dest] = value


def _typed(w: _Where, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if (
        isinstance(value, bool)
        and kind is not bool
        and (not isinstance(kind, tuple) or bool not in kind)
    ):
        raise w.error(key, f"expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise w.error(key, f"expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names_ = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names_.get(k, k.__name__) for k in kinds)


def _strings(w: _Where, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise w.error(key, "expected a list of strings")
    return list(value)


def _env_items(w: _Where, value: Any) -> list[str]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(v, bool | dict | list):
                raise w.error(f"env.{k}", "expected a string or number")
            out.append(f"{k}={v}")
        return out
    return _strings(w, "env", value)


def _ulimit_items(w: _Where, value: Any) -> list[str]:
    if not isinstance(value, dict):
        raise w.error("ulimits", "must be a table", 'e.g. ulimits = { nofile = "1024:2048" }')
    out = []
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise w.error(f"ulimits.{k}", "expected SOFT[:HARD] as a string or a number")
        out.append(f"{k}={v}")
    return out


def _load_resources(w: _Where, spec: dict[str, Any], table: dict[str, Any]) -> None:
    from tophan.run import options

    for key, value in table.items():
        if key not in _RESOURCE_KEYS:
            raise w.error(f"resources.{key}", "unknown key", "known: " + ", ".join(_RESOURCE_KEYS))
        _put(w, spec["opts"], f"resources.{key}", value, _RESOURCE_KEYS[key])
        try:
            options.parse_limits({_RESOURCE_KEYS[key][0]: spec["opts"][_RESOURCE_KEYS[key][0]]})
        except TophanError as e:
            raise w.error(f"resources.{key}", e.message, e.hint) from e


def _load_security(w: _Where, spec: dict[str, Any], table: dict[str, Any]) -> None:
    opts = spec["opts"]
    for key, value in table.items():
        where = f"security.{key}"
        if key in _SECURITY_KEYS:
            _put(w, opts, where, value, _SECURITY_KEYS[key])
        elif key == "seccomp":
            if value not in (True, False, "default", "unconfined"):
                raise w.error(where, 'expected true, false or "unconfined"')
            if value in (False, "unconfined"):
                opts.setdefault("security_opt", []).append("seccomp=unconfined")
        elif key == "no_new_privileges":
            _typed(w, where, value, bool)
            if not value:
                opts.setdefault("security_opt", []).append("no-new-privileges=false")
        else:
            raise w.error(
                where,
                "unknown key",
                "known: cap_add, cap_drop, privileged, seccomp, no_new_privileges",
            )
    try:
        from tophan.run import security

        security.resolve_caps(opts.get("cap_add", []), opts.get("cap_drop", []))
    except TophanError as e:
        raise w.error("security", e.message, e.hint) from e


def _load_health(w: _Where, spec: dict[str, Any], table: dict[str, Any]) -> None:
    raw: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _HEALTH_KEYS:
            raise w.error(f"health.{key}", "unknown key", "known: " + ", ".join(_HEALTH_KEYS))
        raw[key] = value
    spec["health"] = health_spec(raw, f"{w.path}: health").as_dict()


def _load_restart(w: _Where, spec: dict[str, Any], table: dict[str, Any]) -> None:
    policy = table.get("policy", "no")
    for key in table:
        if key not in ("policy", "max_retries"):
            raise w.error(f"restart.{key}", "unknown key", "known: policy, max_retries")
    _typed(w, "restart.policy", policy, str)
    out = RestartPolicy.parse(policy, f"{w.path}: restart.policy")
    if "max_retries" in table:
        _typed(w, "restart.max_retries", table["max_retries"], int)
        if out.policy != "on-failure" or table["max_retries"] < 0:
            raise w.error(
                "restart.max_retries", "only a policy of on-failure takes max_retries >= 0"
            )
        out.max_retries = table["max_retries"]
    spec["restart"] = out.to_json()


def _load_log(w: _Where, spec: dict[str, Any], table: dict[str, Any]) -> None:
    from tophan._internal.units import parse_size

    out = {}
    for key, value in table.items():
        if key == "max_size":
            try:
                out["max_size"] = parse_size(str(value))
            except TophanError as e:
                raise w.error("log.max_size", e.message, e.hint) from e
        elif key == "max_files":
            _typed(w, "log.max_files", value, int)
            if value < 1:
                raise w.error("log.max_files", "must be at least 1")
            out["max_files"] = value
        else:
            raise w.error(f"log.{key}", "unknown key", "known: max_size, max_files")
    spec["log"] = out


def health_spec(raw: dict[str, Any], what: str) -> Check:
    """cmd/http/tcp (exactly one) + timings -> the stored health check."""
    from tophan.app.health import DEFAULTS, Check, parse_duration

    kinds = [k for k in ("cmd", "http", "tcp") if raw.get(k)]
    if len(kinds) != 1:
        raise UsageError(f"{what}: give exactly one of cmd, http, tcp", f"got {kinds or 'none'}")
    kind = kinds[0]
    check = Check(kind)
    value = raw[kind]
    if kind == "cmd":
        if isinstance(value, str):
            check.cmd = ["/bin/sh", "-c", value]
        elif isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            check.cmd = value[1:] if value[0] == "CMD" else value
            if value[0] == "CMD-SHELL":
                check.cmd = ["/bin/sh", "-c", " ".join(value[1:])]
        else:
            raise UsageError(f"{what}: cmd must be a string or a list of strings")
    elif kind == "http":
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise UsageError(f"{what}: http must be a URL", "e.g. http://127.0.0.1:8080/health")
        check.url = value
    else:
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{what}: tcp must be HOST:PORT", "e.g. 127.0.0.1:5432")
        check.address = str(value)
    for key in ("interval", "timeout", "start_period"):
        d = parse_duration(raw.get(key, DEFAULTS[key]), f"{what}: {key}")
        if key != "start_period" and d <= 0:
            raise UsageError(f"{what}: {key} must be more than 0")
        setattr(check, key, d)
    retries = raw.get("retries", DEFAULTS["retries"])
    if isinstance(retries, str) and retries.isdigit():
        retries = int(retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise UsageError(f"{what}: retries must be a whole number >= 1")
    check.retries = retries
    return check


def signal_name(text: str, what: str) -> str:
    import signal

    name = text.upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name
        except ValueError:
            pass
    else:
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return name
    raise UsageError(f"{what}: unknown signal {text!r}", "e.g. SIGTERM, SIGINT, SIGQUIT, 15")
