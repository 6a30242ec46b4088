"""tophand: the supervisor of one app. Started by ``tophan app start``; no socket, no daemon.

    python -m tophan.app.supervisor --root ROOT --ready-fd FD NAME

It daemonizes (new session, no controlling terminal, nobody's child), takes the app's lock (its
proof of life), starts the container, reports "ok" or "error CODE MESSAGE" on the ready fd, and
then owns the app until it stops: copies the app's output into rotated logs, runs health checks,
restarts by the app's policy with exponential backoff, and writes every change of state
atomically. It exits when the app is stopped (SIGTERM from ``app stop``) or ends for good.

If tophand itself is killed, the kernel takes the app down too (the container's init has
tophand as its parent-death target, and every mount lives in the container's namespace).
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import time

from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan.app.apps import App
    from tophan.app.health import Check, Health
    from tophan.run.container import Child, Container, Spec

BACKOFF_START = 0.1  # Docker's: 100 ms, doubling, at most a minute, reset after 10 s of uptime
BACKOFF_MAX = 60.0
BACKOFF_RESET = 10.0


class LogWriter:
    """Appends the app's output to logs/app.log, rotating at max_size into app.log.1..N-1."""

    def __init__(self, path: str, max_size: int, max_files: int) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        from tophan.app.apps import PRIVATE

        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, PRIVATE)
        os.fchmod(fd, PRIVATE)  # what the app prints is its owner's (older logs were 0640)
        return fd

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_size - self.size
            if room <= 0:
                self.rotate()
                continue
            chunk, data = data[:room], data[room:]
            os.write(self.fd, chunk)
            self.size += len(chunk)

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.max_files - 1, 0, -1):
            src = self.path if i == 1 else f"{self.path}.{i - 1}"
            try:
                os.replace(src, f"{self.path}.{i}")
            except FileNotFoundError:
                pass
        if self.max_files == 1:
            os.truncate(self.path, 0)
        self.fd = self._open()
        self.size = 0


class Supervisor:
    def __init__(self, app: App, ready_fd: int) -> None:
        self.app = app
        self.ready_fd = ready_fd
        self.sel = selectors.DefaultSelector()
        # Signals wake the loop through this pipe (signal.set_wakeup_fd).
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.state: dict[str, Any] = {
            "status": "starting",
            "supervisor": os.getpid(),
            "restart_count": 0,
            "pid": 0,
            "exit_code": None,
            "oom_killed": False,
            "error": None,
            "cgroup": "",
        }
        self.log = LogWriter(app.log_path, app.spec.log.max_size, app.spec.log.max_files)
        self.ctr: Container | None = None
        self.spec: Spec | None = None
        self.stopping = False
        self.stop_deadline = 0.0
        self.check: Check | None = None
        self.health: Health | None = None
        self.probe: tuple[Child, int, float, float] | None = None  # proc, fd, start, end
        self.probe_out = b""
        self.next_check = 0.0
        self.pipes: list[int] = []

    # -- signals: set flags, wake the loop ----------------------------------------------------

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")

    def _on_signal(self, signo: int, _frame: object) -> None:
        if signo in (signal.SIGTERM, signal.SIGINT):
            self.request_stop()

    def request_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        grace = self._grace()
        self.stop_deadline = time.monotonic() + grace
        self.set(status="stopping")
        if self.ctr is not None and self.ctr.returncode is None:
            self.ctr.signal(self._stop_signal())

    def _grace(self) -> float:
        from tophan.app import apps

        try:
            with open(self.app.path("stop_timeout")) as f:
                grace = float(f.read())
            os.unlink(self.app.path("stop_timeout"))
            return grace
        except (OSError, ValueError):
            timeout = self.app.spec.stop_timeout
            return apps.DEFAULT_STOP_TIMEOUT if timeout is None else timeout

    def _stop_signal(self) -> int:
        name = self.app.spec.stop_signal
        if not name and self.spec is not None:
            name = self.image_stop_signal
        return int(signal.Signals[name]) if name else int(signal.SIGTERM)

    image_stop_signal: str | None = None

    # -- state ----------------------------------------------------------------------------------

    def set(self, **changes: Any) -> None:
        from tophan.app import apps

        self.state.update(changes)
        if self.health is not None:
            self.state["health"] = self.health.as_dict()
        apps.write_state(self.app, self.state)

    def ready(self, message: str) -> None:
        if self.ready_fd >= 0:
            try:
                os.write(self.ready_fd, message.encode())
            except OSError:
                pass
            os.close(self.ready_fd)
            self.ready_fd = -1

    # -- the container --------------------------------------------------------------------------

    def start_container(self) -> None:
        from tophan.run import container as runtime

        self.spec = spec = self.app.run_spec()
        self._health_config()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.ctr = runtime.start(self.app.store, spec, stdio=(null, out_w, out_w))
        finally:
            os.close(out_w)
            os.close(null)
        os.set_blocking(out_r, False)
        self.sel.register(out_r, selectors.EVENT_READ, "log")
        self.pipes.append(out_r)
        started = time.time()
        self.set(
            status="running",
            pid=self.ctr.pid,
            started_at=started,
            finished_at=None,
            exit_code=None,
            oom_killed=False,
            error=None,
            cgroup=self.ctr.cgroup.name if self.ctr.cgroup is not None else "",
            # as published: with the host port picked for a `-p 80` and every port of a -P
            ports=[p.shown() for p in self.ctr.net.ports] if self.ctr.net is not None else [],
        )
        if self.check is not None:
            from tophan.app.health import Health

            self.health = Health(self.check, started)
            self.next_check = time.monotonic() + self.check.interval
            self.set()

    def _health_config(self) -> None:
        from tophan.app import health

        spec = self.app.spec
        self.check = spec.health
        if self.check is None and spec.run.image:
            from tophan.run.options import image_stack

            try:
                _, config = image_stack(self.app.store, spec.run.image)
            except TophanError:
                config = {}
            if config.get("Healthcheck") and not spec.no_healthcheck:
                self.check = health.from_docker(config["Healthcheck"])
            self.image_stop_signal = config.get("StopSignal")

    def container_exited(self) -> None:
        assert self.ctr is not None
        ctr, self.ctr = self.ctr, None
        code = ctr.wait()
        oom = 0
        if ctr.cgroup is not None:
            try:
                oom = ctr.cgroup.oom_kills()
            except (OSError, TophanError):
                oom = 0
        self._end_probe(kill=True)
        self._drain_logs()
        ctr.close()
        self.health = None
        self.set(
            status="exited",
            pid=0,
            exit_code=code,
            oom_killed=oom > 0,
            finished_at=time.time(),
            cgroup="",
        )

    def _drain_logs(self) -> None:
        for fd in self.pipes:
            self._read_log(fd, final=True)
            self.sel.unregister(fd)
            os.close(fd)
        self.pipes.clear()

    def _read_log(self, fd: int, final: bool = False) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                if not final:
                    self.sel.unregister(fd)
                    self.pipes.remove(fd)
                    os.close(fd)
                return
            self.log.write(data)

    # -- restart policy -------------------------------------------------------------------------

    def should_restart(self) -> bool:
        policy = self.app.spec.restart
        if self.stopping or policy.policy == "no":
            return False
        code = self.state.get("exit_code")
        if policy.policy == "on-failure":
            if code == 0:
                return False
            limit = policy.max_retries
            return not limit or self.state["restart_count"] < limit
        return True

    # -- health checks --------------------------------------------------------------------------

    def start_probe(self) -> None:
        assert self.check is not None and self.ctr is not None and self.spec is not None
        r, w = os.pipe2(os.O_CLOEXEC)
        start = time.time()
        try:
            if self.check.kind == "cmd":
                proc: Child = self._probe_cmd(w)
            else:
                proc = self._probe_net(w)
        except TophanError as e:
            os.close(r)
            os.close(w)
            assert self.health is not None
            self.health.record(start, time.time(), 1, str(e))
            self.set()
            return
        os.close(w)
        os.set_blocking(r, False)
        self.sel.register(r, selectors.EVENT_READ, "probe")
        self.probe = (proc, r, start, time.monotonic() + self.check.timeout)
        self.probe_out = b""

    def _probe_cmd(self, w: int) -> Child:
        from tophan.run import container as runtime

        assert self.check is not None and self.ctr is not None and self.spec is not None
        spec = self.spec.replace(argv=self.check.cmd)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return runtime.spawn_in(self.ctr.pid, spec, cgroup=self.ctr.cgroup, stdio=(null, w, w))
        finally:
            os.close(null)

    def _probe_net(self, w: int) -> Child:
        from tophan.app import health
        from tophan.run import container as runtime

        assert self.check is not None and self.ctr is not None
        check, target = self.check, self.ctr.pid
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code, text = health.probe_network(check, target)
                os.write(w, text.encode()[: health.MAX_OUTPUT])
            except BaseException as e:
                try:
                    os.write(w, f"check failed: {e}".encode())
                except OSError:
                    pass
            os._exit(code)
        return runtime.Child(pid)

    def probe_tick(self) -> None:
        """Reap a finished probe or kill one past its timeout."""
        if self.probe is None:
            return
        proc, fd, start, deadline = self.probe
        code = proc.poll()
        if code is None and time.monotonic() < deadline:
            return
        if code is None:
            self._end_probe(kill=True)
            code = -1
            output = f"Health check exceeded timeout ({self.check.timeout if self.check else 0}s)"
        else:
            self._read_probe(fd)
            self._end_probe(kill=False)
            output = self.probe_out.decode(errors="replace")
        if self.health is not None:
            self.health.record(start, time.time(), 0 if code == 0 else 1, output)
            self.set()

    def _read_probe(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            if len(self.probe_out) < 4096:
                self.probe_out += data

    def _end_probe(self, *, kill: bool) -> None:
        if self.probe is None:
            return
        proc, fd, _, _ = self.probe
        self.probe = None
        if kill:
            proc.signal(signal.SIGKILL)
        proc.wait()
        self.sel.unregister(fd)
        os.close(fd)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        backoff = BACKOFF_START
        while True:
            try:
                self.start_container()
            except TophanError as e:
                self.set(status="exited", error=str(e), finished_at=time.time(), pid=0)
                self.ready(f"error {e.rc} {e}")
                if not self.state.get("restart_count") or not self.should_restart():
                    return 1
            else:
                self.ready("ok")
                began = time.monotonic()
                self.watch()
                if time.monotonic() - began >= BACKOFF_RESET:
                    backoff = BACKOFF_START
            if not self.should_restart():
                return 0
            self.set(status="restarting")
            if not self.sleep(backoff):
                self.set(status="exited")
                return 0
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.state["restart_count"] += 1

    def watch(self) -> None:
        """Until the container exits: logs, health checks, the stop deadline."""
        assert self.ctr is not None
        if self.stopping:
            self.ctr.signal(self._stop_signal())
        while True:
            if self.ctr.poll() is not None:
                self.container_exited()
                return
            timeout = self._next_timeout()
            for key, _ in self.sel.select(timeout):
                if key.data == "wake":
                    self._drain_wake()
                elif key.data == "log":
                    self._read_log(int(key.fd))
                elif key.data == "probe":
                    self._read_probe(int(key.fd))
            self._timers()
            self._reap_orphans()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        times = [now + 1.0]
        if self.stopping:
            times.append(self.stop_deadline)
        if self.probe is not None:
            times.append(min(self.probe[3], now + 0.05))
        elif self.check is not None and self.health is not None:
            times.append(self.next_check)
        return max(0.0, min(times) - now)

    def _timers(self) -> None:
        now = time.monotonic()
        if self.stopping and now >= self.stop_deadline and self.ctr is not None:
            self.ctr.kill_all()  # the grace period is over: the whole cgroup goes
            self.stop_deadline = now + 3600
        self.probe_tick()
        if (
            not self.stopping
            and self.probe is None
            and self.check is not None
            and self.health is not None
            and now >= self.next_check
        ):
            self.next_check = now + self.check.interval
            self.start_probe()

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._reap_orphans()

    def _reap_orphans(self) -> None:
        """Reap children we did not start ourselves.

        We are a child subreaper (the runtime needs that), so a health check's process inside
        the container becomes ours when its helper is killed at the timeout. Unreaped, such a
        zombie would keep the container's pid namespace from ever finishing its exit."""
        from tophan.run import container as runtime

        known = {self.ctr.pid if self.ctr is not None else 0}
        if self.probe is not None:
            known.add(self.probe[0].pid)
        for pid in _children():
            if pid not in known:
                try:
                    runtime.waitpid(pid, os.WNOHANG)  # detaches one that made us its tracer
                except ChildProcessError:
                    pass

    def sleep(self, seconds: float) -> bool:
        """Backoff between restarts; False if a stop came in meanwhile."""
        end = time.monotonic() + seconds
        while not self.stopping:
            left = end - time.monotonic()
            if left <= 0:
                return True
            for key, _ in self.sel.select(left):
                if key.data == "wake":
                    self._drain_wake()
        return False


def _children() -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return pids


# -- start-up ----------------------------------------------------------------------------------


def set_title(title: str) -> None:
    """Name this process ``title`` (its first word, e.g. ``tophand``) for ps, top and pgrep:
    the kernel's comm name, through PR_SET_NAME (at most 15 bytes). The command line keeps the
    app's name (``... tophan.app.supervisor --root R NAME``)."""
    import ctypes

    from tophan._internal import libc as _libc

    PR_SET_NAME = 15
    name = ctypes.c_char_p(title.split()[0].encode()[:15])
    zero = ctypes.c_ulong(0)
    # Cosmetic, so its result is not checked: on failure the name stays the interpreter's.
    _libc.libc().prctl(ctypes.c_int(PR_SET_NAME), name, zero, zero, zero)


def _daemonize() -> None:
    if os.fork():
        os._exit(0)  # the parent `app start` reaps this one at once
    os.setsid()


def _lock(app: App) -> int:
    from tophan._internal.fs import try_flock

    fd = os.open(app.path("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if not try_flock(fd):
        os.close(fd)
        raise TophanError(f"app {app.name} already has a supervisor")
    return fd


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root, ready_fd, name = _parse(args)
    _daemonize()
    set_title(f"tophand {name}")
    from tophan._internal.root import StoreRoot
    from tophan.app import apps

    try:
        store = StoreRoot(root)
        app = apps.Apps(store).get(name)
        lock_fd = _lock(app)
    except TophanError as e:
        _reply(ready_fd, f"error {e.rc} {e}")
        return 1
    sup = Supervisor(app, ready_fd)
    sup.install_signals()
    try:
        return sup.run()
    except BaseException as e:
        sup.ready(f"error 1 tophand: {type(e).__name__}: {e}")
        sup.set(status="exited", error=f"supervisor failed: {e}", pid=0)
        if sup.ctr is not None:
            sup.ctr.close()
        raise
    finally:
        os.close(lock_fd)


def _reply(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def _parse(args: list[str]) -> tuple[str, int, str]:
    root, ready, name = "", -1, ""
    i = 0
    while i < len(args):
        if args[i] == "--root":
            root = args[i + 1]
            i += 2
        elif args[i] == "--ready-fd":
            ready = int(args[i + 1])
            i += 2
        else:
            name = args[i]
            i += 1
    if not root or not name:
        sys.stderr.write("usage: tophand --root ROOT [--ready-fd FD] NAME\n")
        raise SystemExit(2)
    return root, ready, name


if __name__ == "__main__":
    raise SystemExit(main())
