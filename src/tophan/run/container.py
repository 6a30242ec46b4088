"""Start a process in a composed, isolated root: the container runtime.

How a container comes to life (no daemon, no helper binary, two forks)::

    caller (tophan run / tophand / your program; a child subreaper)
      └─ fork: "setup" — unshare(mnt, uts, ipc, pid [, net] [, user]) ... forks "init", exits
            └─ "init" (pid 1 in the new pid namespace, reparented to the caller)
                 mounts the overlay and /proc, /dev, /sys, volumes, pivots into the root
                 (while the caller puts it in its cgroup), enters a cgroup namespace, drops
                 privileges and execs the command.

The setup process exists only because a process cannot move itself into a new pid namespace;
it exits at once, and since the caller is a child subreaper the init process becomes the
caller's child, so the caller waits for it directly: one process per container, the command
itself. Every mount lives in the container's mount namespace, so when its last process exits
the kernel tears them all down: nothing stays mounted whatever way the caller dies. The init
process gets SIGKILL if the caller dies (parent-death signal), which ends the pid namespace.

The run dir (upper, work, rootfs mountpoint, generated /etc files) is a staging dir in the
store's tmp/, locked by the caller while it runs: a crash leaves it to ``gc``.
"""

from __future__ import annotations

import _thread
import errno
import os
import stat

from tophan._internal import libc as _libc
from tophan._internal import signals as signal
from tophan._internal.root import is_privileged
from tophan.errors import TophanError, UsageError
from tophan.layer.layers import Layers
from tophan.run import devices

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterator, Sequence
    from typing import NoReturn

    from tophan._internal.fs import Staging
    from tophan._internal.root import StoreRoot
    from tophan.net.attach import Attachment
    from tophan.net.pasta import Pasta
    from tophan.net.ports import Port
    from tophan.run.cgroup import Cgroup, Limits

# Exit codes of `docker run` for failures that are not the command's own.
RC_SETUP = 125  # the container could not be set up
RC_NOT_EXECUTABLE = 126
RC_NOT_FOUND = 127

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Signals a caller forwards to the container (SIGCHLD/SIGKILL/SIGSTOP excluded by nature).
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)
# Mount points a kept upper dir never carries (see _drop_mount_stubs).
_STUB_DIRS = ("proc", "sys", "dev")
_ETC_FILES = ("hosts", "hostname", "resolv.conf")
# The devices a container gets: bind mounts of the host's nodes (see _mount_dev).
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


class RunError(TophanError):
    """The container could not be started."""

    rc = RC_SETUP


class Bind:
    """A host path (or a volume's directory) mounted into the container."""

    def __init__(self, source: str, target: str, readonly: bool = False) -> None:
        self.source = source
        self.target = target
        self.readonly = readonly

    def __repr__(self) -> str:
        return f"Bind({self.source!r}, {self.target!r}, readonly={self.readonly})"


class Spec:
    """Everything that defines one container run. Lowers are layer trees, top first.

    (Plain classes here, not dataclasses: importing ``dataclasses`` costs ~10 ms, a third of
    a container start.)"""

    def __init__(self, lowers: list[str], argv: list[str]) -> None:
        self.lowers = lowers
        self.argv = argv
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.user: str | None = None  # "uid[:gid]" or "name[:group]", from the container's /etc
        self.hostname = "tophan"
        # "none" (only lo), "host", "private" (the default network) or a network's name
        self.network = "none"
        self.ports: list[Port] = []  # published ports (a private network only)
        self.binds: list[Bind] = []
        self.limits: Limits | None = None
        self.caps: frozenset[str] | None = None  # None: the default set
        self.seccomp = True
        self.no_new_privs = True
        self.readonly_rootfs = False
        self.rlimits: dict[str, tuple[int, int]] = {}
        self.tmpfs: list[str] = []
        self.name = ""  # used for the cgroup; unique among live runs (default: the run dir's)
        self.userxattr = False  # overlay in a user namespace (rootless stores)
        self.no_limits = False  # rootless: run without a cgroup rather than refuse
        # A small init as pid 1 (docker's --init): the command runs as its child, pid 2, so
        # that signals without a handler in the command still act, and orphans are reaped.
        self.init = False
        self.digests: list[str] = []  # the lowers' layers, kept from gc while running
        # Device nodes the container may open (the device cgroup); None: any (--privileged).
        self.devices: list[devices.Rule] | None = list(devices.DEFAULT_RULES)
        self.volumes: list[str] = []  # named volumes, held while running
        # A pseudo-terminal of the container's own (its devpts) as stdin/out/err and
        # controlling terminal; the caller gets the master (``Container.pty``).
        self.tty = False
        self.tty_size: tuple[int, int] | None = None  # rows, columns, set before the exec
        self.interactive = False  # run()/exec_in(): our stdin goes in (else /dev/null)
        # Filled in by start()/spawn_in() in the caller: the compiled seccomp filter, so that
        # the child loads it with one syscall and never imports libseccomp.
        self.seccomp_bpf: list[bytes] | None = None
        self.console_fd = -1  # the child's end of the socket the pty master is sent over

    def replace(self, **changes: object) -> Spec:
        """A copy with some fields changed (like dataclasses.replace)."""
        new = Spec.__new__(Spec)
        new.__dict__.update(self.__dict__)
        for key, value in changes.items():
            if key not in new.__dict__:
                raise TypeError(f"Spec has no field {key!r}")
            setattr(new, key, value)
        return new

    def check(self) -> None:
        if not self.argv:
            raise UsageError("no command to run", "give one after `--`, or use an image with Cmd")
        check_network(self.network, self.ports)
        if not self.lowers:
            raise UsageError("no layers to run on", "give at least one -l LAYER")
        for target in [b.target for b in self.binds] + self.tmpfs:
            _check_mount_target(target)
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise UsageError(
                    f"invalid environment variable {key!r}",
                    "a name is not empty and has no '=' (nor NUL bytes, nor its value)",
                )
        if not os.path.isabs(self.workdir):
            raise UsageError(f"working directory {self.workdir!r} is not an absolute path")
        import resource

        for name in self.rlimits:
            if not hasattr(resource, f"RLIMIT_{name.upper()}"):
                raise UsageError(
                    f"unknown rlimit {name!r}", "e.g. nofile, nproc, core, stack, memlock"
                )
        uname, _, gname = (self.user or "").partition(":")
        for part, what in ((uname, "user"), (gname, "group")):
            if part.lstrip("-").isdigit():
                check_id(int(part), what)


def check_network(network: str, ports: Sequence[object] = ()) -> None:
    from tophan._internal import names

    if network not in ("none", "host", "private") and not names.is_valid(network):
        raise UsageError(
            f"unknown network {network!r}",
            "use --network none, host, private or the name of a network (`tophan network ls`)",
        )
    if ports and network in ("none", "host"):
        raise UsageError(
            f"cannot publish ports with --network {network}",
            "publish from a private network: --network private",
        )


def is_private(network: str) -> bool:
    return network not in ("none", "host")


def _check_mount_target(target: str) -> None:
    """Where a bind, volume or tmpfs may go: not over the root (it would hide the image) nor
    over /proc (the runtime's and the kernel's view of the container, as runc refuses)."""
    if not os.path.isabs(target):
        raise UsageError(f"mount target {target!r} is not an absolute path")
    norm = "/" + os.path.normpath(target).lstrip("/")  # (POSIX keeps a leading "//")
    if norm == "/" or norm == "/proc" or norm.startswith("/proc/"):
        raise UsageError(
            f"cannot mount over {norm}", "mount somewhere else: / and /proc belong to the runtime"
        )


# -- the caller's side -------------------------------------------------------------------------


class Child:
    """A child process of ours: signal it, poll it, reap it (exit code as a shell gives it).

    ``pty`` is the master of the process's terminal (``spec.tty``), ours to read and write."""

    def __init__(self, pid: int = 0) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.pty: int | None = None

    def signal(self, sig: int) -> None:
        if self.returncode is None and self.pid:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        if self.returncode is None:
            status = waitpid(self.pid, os.WNOHANG)
            if status is not None:
                self.returncode = exit_code(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            status = waitpid(self.pid, 0)
            assert status is not None  # without WNOHANG waitpid returns only with a status
            self.returncode = exit_code(status)
        return self.returncode


def waitpid(pid: int, options: int) -> int | None:
    """``os.waitpid`` that reports only the end of ``pid`` (None: not yet, with WNOHANG).

    A container's init may make us its tracer (``ptrace(PTRACE_TRACEME)``: we are its parent),
    and then its stops are reported to us: each is undone by detaching (passing the signal on,
    except the trap of an exec), so a hostile container can neither crash nor wedge its caller
    or supervisor."""
    while True:
        try:
            got, status = os.waitpid(pid, options)
        except InterruptedError:
            continue
        if not got:
            return None
        if not os.WIFSTOPPED(status):
            return status
        sig = os.WSTOPSIG(status)
        _libc.ptrace_detach(got, 0 if sig == signal.SIGTRAP else sig)


class Container(Child):
    """A started container (``pid``: its init, the command). ``wait()`` reaps it; ``close()``
    removes what it left."""

    def __init__(self, spec: Spec, run_dir: Staging, cgroup: Cgroup | None) -> None:
        super().__init__()
        self.spec = spec
        self.run_dir = run_dir
        self.cgroup = cgroup
        self.holds: list[int] = []  # shared locks on the volumes it mounts
        self.net: Attachment | Pasta | None = None  # its private network, start to close

    @property
    def upper(self) -> str:
        return os.path.join(self.run_dir.path, "upper")

    def kill_all(self) -> None:
        """SIGKILL the init process (which ends its pid namespace) and everything in the cgroup."""
        self.signal(signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()

    def close(self, *, keep_upper: str | None = None) -> None:
        """Reap, remove the cgroup, and discard the run dir (or keep its upper dir)."""
        if self.returncode is None and self.pid:  # (0: it failed before there was a process)
            self.kill_all()
            self.wait()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        for fd in self.holds:
            _close_quietly(fd)
        self.holds.clear()
        if self.net is not None:
            net, self.net = self.net, None
            net.release()
        if self.pty is not None:
            _close_quietly(self.pty)
            self.pty = None
        if keep_upper is not None:
            _drop_mount_stubs(self.upper, self.spec.lowers)
            _keep_upper(self.upper, keep_upper)
        self.run_dir.discard()


def exit_code(status: int) -> int:
    """Shell convention: the exit status, or 128+N for a signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _drop_mount_stubs(upper: str, lowers: list[str]) -> None:
    """Remove what we made in the upper dir only to mount over, where the image had nothing:
    /proc, /sys, /dev (empty dirs) and the empty /etc/hosts, /etc/hostname, /etc/resolv.conf
    that _write_etc binds. They are the runtime's, not the command's: a kept upper dir (a
    build's step, `run --keep-upper`) never carries them (Docker's rule)."""
    for name in _STUB_DIRS:
        path = os.path.join(upper, name)
        if any(os.path.lexists(os.path.join(lo, name)) for lo in lowers):
            continue
        try:
            os.rmdir(path)  # only if empty: a RUN that wrote there keeps what it wrote
        except OSError:
            pass
    etc = os.path.join(upper, "etc")
    if not os.path.isdir(etc) or os.path.islink(etc):
        return
    removed = False
    for name in _ETC_FILES:
        path = os.path.join(etc, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        in_lower = any(os.path.lexists(os.path.join(lo, "etc", name)) for lo in lowers)
        if stat.S_ISREG(st.st_mode) and st.st_size == 0 and not in_lower:
            os.unlink(path)
            removed = True
    if removed and not os.listdir(etc):
        # /etc itself was copied up only to hold them: give it back the lower's times
        for lo in lowers:
            try:
                lst = os.lstat(os.path.join(lo, "etc"))
            except FileNotFoundError:
                continue
            os.utime(etc, ns=(lst.st_atime_ns, lst.st_mtime_ns), follow_symlinks=False)
            break


def _keep_upper(upper: str, dest: str) -> None:
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise TophanError(f"cannot keep the upper dir at {dest}: it exists", "pick a new path")
    try:
        os.rename(upper, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise TophanError(f"cannot keep the upper dir at {dest}: {e.strerror}") from e
        import shutil

        # Another filesystem: copy with xattrs (whiteouts are char devices: copy them as such).
        shutil.copytree(upper, dest, symlinks=True, copy_function=_copy_special)


def _copy_special(src: str, dst: str) -> None:
    import shutil

    st = os.lstat(src)
    if stat.S_ISCHR(st.st_mode):
        os.mknod(dst, st.st_mode, st.st_rdev)
        return
    shutil.copy2(src, dst)


def start(
    store: StoreRoot,
    spec: Spec,
    *,
    pass_fds: Sequence[int] = (),
    stdio: tuple[int, int, int] | None = None,
) -> Container:
    """Start ``spec``'s command; returns once it has been exec'd (or raises RunError).

    ``stdio`` replaces the command's stdin, stdout and stderr (default: ours). The command runs
    in a session of its own and never gets a terminal of ours (one is replaced by /dev/null: a
    process holding a terminal can type into it, TIOCSTI); ``run()`` proxies a terminal
    through pipes. With ``spec.tty`` its stdio are a pseudo-terminal of its own instead, whose
    master is ``Container.pty``."""
    spec.check()
    spec.userxattr = store.xattr_ns == "user"
    run_dir = store.staging("run")
    try:
        cgroup = _make_cgroup(spec, os.path.basename(run_dir.path))
    except BaseException:
        run_dir.discard()
        raise
    ctr = Container(spec, run_dir, cgroup)
    try:
        # After the cgroup: the wait for its move (warm_up_moves) passes meanwhile.
        _prepare(spec, store.path("cache"))
        for sub in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(run_dir.path, sub), 0o755)
        os.chmod(run_dir.path, 0o755)
        _claim_layers(store, run_dir.path, spec.digests)
        if spec.volumes:
            from tophan.run.volumes import Volumes

            ctr.holds = [Volumes(store).hold(v) for v in spec.volumes]
        if is_private(spec.network):
            ctr.net = _attach(store, spec, run_dir.path)
        _launch(ctr, pass_fds, stdio)
    except BaseException:
        ctr.close()
        raise
    return ctr


def _attach(store: StoreRoot, spec: Spec, run_dir: str) -> Attachment | Pasta:
    if os.geteuid() != 0:
        # No bridge or veth without root: pasta relays the namespace's traffic instead.
        if spec.network != "private":
            raise RunError(
                f"network {spec.network!r} needs root: rootless containers have only the "
                "default private network (through pasta)",
                "use --network private, none or host",
            )
        from tophan.net import pasta

        return pasta.prepare(run_dir, spec.hostname, spec.ports)
    from tophan.net import attach

    name = spec.name or os.path.basename(run_dir)
    owner = os.path.basename(run_dir)
    return attach.prepare(store, spec.network, owner, run_dir, name, spec.hostname, spec.ports)


RUN_META = "run.meta"


def _claim_layers(store: StoreRoot, run_dir: str, digests: list[str]) -> None:
    """Record our layers in the (locked) run dir, under the store lock: gc keeps them."""
    from tophan._internal.fs import write_meta

    with store.lock():
        for d in digests:
            if not os.path.isdir(Layers(store).tree_path(d)):
                raise RunError(f"layer {d} is gone", "it was removed; run `fsck`")
        write_meta(os.path.join(run_dir, RUN_META), {"lower_digests": digests})


def live_run_digests(store: StoreRoot) -> set[str]:
    """Layers of runs in progress (their run dirs are locked by their owners)."""
    from tophan._internal import meta
    from tophan._internal.fs import try_flock

    out: set[str] = set()
    tmp = store.path("tmp")
    for entry in os.scandir(tmp):
        if not entry.name.startswith("run-"):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if try_flock(fd, shared=True):
                continue  # nobody holds it: a leftover, gc's to remove
        finally:
            os.close(fd)
        try:
            info = meta.read(os.path.join(entry.path, RUN_META))
        except OSError:
            continue
        out.update(x for x in info.get("lower_digests", "").split(",") if x)
    return out


def _make_cgroup(spec: Spec, run_name: str) -> Cgroup | None:
    from tophan.run import cgroup

    limits = spec.limits or cgroup.Limits()
    reason = cgroup.unavailable(limits)
    if reason is not None:
        if spec.no_limits or not _has_limits(limits):
            return None
        raise RunError(reason)
    prune_stale_cgroups()
    # A user namespace cannot open devices it makes: the device cgroup is for real root (and
    # attaching a v2 device program needs it).
    rules = spec.devices if is_privileged() else None
    # One-shot runs name their cgroup after their run dir, so gc can tell whose it was.
    cg = cgroup.Cgroup.create(spec.name or run_name, limits, rules)
    # Only now: the warm-up holds the cgroup file system's lock while it waits.
    cgroup.warm_up_moves()
    return cg


def prune_stale_cgroups(min_age: float = 60.0) -> list[str]:
    """Remove empty run cgroups left by runs whose caller was killed (SIGKILL leaves no time to
    clean up). Only cgroups with no process that are older than ``min_age`` seconds: a run
    that just made its cgroup has not moved its process in yet."""
    import time

    from tophan.run import cgroup

    removed = []
    for name in cgroup.list_ours():
        if not name.startswith("run-"):
            continue
        try:
            cg = cgroup.Cgroup.open(name)
            if cg.procs() or time.time() - os.stat(cg.paths()[0]).st_mtime < min_age:
                continue
            cg.remove()
        except (OSError, IndexError, TophanError):
            continue
        removed.append(name)
    return removed


def _has_limits(limits: Limits) -> bool:
    return bool(limits.controllers())


def _launch(ctr: Container, pass_fds: Sequence[int], stdio: tuple[int, int, int] | None) -> None:
    # Orphans of our children (the init process, once setup exits) become our children: we
    # are a child subreaper while a launch is in progress, and only then. A program using the
    # API keeps its own rule for its orphans afterwards.
    with _Subreaper():
        _launch_as_subreaper(ctr, pass_fds, stdio)


class _Subreaper:
    """PR_SET_CHILD_SUBREAPER for the duration of the launches in progress (the attribute is
    the process's, and threads may launch at once); restored to what it was before."""

    lock = _thread.allocate_lock()
    active = 0
    was = False

    def __enter__(self) -> None:
        cls = _Subreaper
        with cls.lock:
            if cls.active == 0:
                cls.was = _libc.child_subreaper()
                if not cls.was:
                    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
            cls.active += 1

    def __exit__(self, *exc: object) -> None:
        cls = _Subreaper
        with cls.lock:
            cls.active -= 1
            if cls.active == 0 and not cls.was:
                _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 0)


def _launch_as_subreaper(
    ctr: Container, pass_fds: Sequence[int], stdio: tuple[int, int, int] | None
) -> None:
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    console = _console(ctr.spec)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        _in_child(msg_w, stdio, lambda: _setup_process(ctr, parent, go_r, msg_w, pass_fds))
    os.close(go_r)
    os.close(msg_w)
    try:
        _close_console(ctr.spec)
        _handshake(ctr, pid, go_w, _Lines(msg_r))
        if console is not None:
            ctr.pty = _receive_pty(console)
    finally:
        _close_quietly(go_w)
        _close_quietly(msg_r)
        if console is not None:
            console.close()


def _console(spec: Spec) -> socket.socket | None:
    """With ``spec.tty``: a socket pair (ours returned, the child's in ``spec.console_fd``) over
    which the container sends its terminal's master, as runc's console socket."""
    if not spec.tty:
        return None
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    spec.console_fd = theirs.detach()
    return ours


def _close_console(spec: Spec) -> None:
    if spec.console_fd >= 0:
        _close_quietly(spec.console_fd)
        spec.console_fd = -1


def _receive_pty(console: socket.socket) -> int:
    import socket

    # The child sent it before its exec, which succeeded: it is waiting in the socket.
    _, fds, _, _ = socket.recv_fds(console, 1, 1)
    if not fds:
        raise RunError("the container did not hand over its terminal")
    return fds[0]


def _handshake(ctr: Container, setup_pid: int, go_w: int, msgs: _Lines) -> None:
    line = msgs.next()
    if line == "map":
        from tophan._internal import userns

        userns.write_maps(setup_pid)
        os.write(go_w, b"m")
        line = msgs.next()
    _, status = os.waitpid(setup_pid, 0)
    if not line.startswith("pid "):
        raise _failure(line, status)
    ctr.pid = int(line[4:])
    # Joining v1 cgroups is slow (a few ms a hierarchy): the init process sets up its mounts
    # meanwhile, and waits for "c" only before it enters its cgroup namespace and execs.
    os.write(go_w, b"g")
    try:
        if ctr.cgroup is not None:
            ctr.cgroup.add(ctr.pid)
        if ctr.net is not None:
            # Meanwhile the init mounts: its network is ready before it execs (it waits for "c").
            ctr.net.connect(ctr.pid)
    except BaseException:
        ctr.kill_all()
        ctr.wait()
        raise
    try:
        os.write(go_w, b"c")
    except BrokenPipeError:
        pass  # the init failed before it needed the cgroup: its message says why
    line = msgs.next()  # EOF: exec succeeded (the pipe is close-on-exec)
    if line:
        ctr.wait()
        raise _failure(line, None)


def _failure(line: str, status: int | None) -> RunError:
    if line.startswith("error "):
        code, _, text = line[6:].partition(" ")
        err = RunError(text)
        err.rc = int(code)
        return err
    if status is not None:
        return RunError(f"container setup died ({exit_code(status)})")
    return RunError("container setup failed")


class _Lines:
    """Lines from the message pipe; "" at EOF."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self) -> str:
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest.decode(errors="replace")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def run(store: StoreRoot, spec: Spec, *, keep_upper: str | None = None) -> int:
    """Run to completion like ``docker run --rm``: forward signals, return the exit code.

    The container's stdio are ours as docker gives them: stdin only with ``spec.interactive``
    (else /dev/null), a terminal of ours proxied through a pipe and never handed in, and with
    ``spec.tty`` a terminal of its own, proxied to ours (``tophan.run.stdio``)."""

    def end(ctr: Child) -> None:
        assert isinstance(ctr, Container)
        ctr.close(keep_upper=keep_upper)

    return _attached(spec, lambda stdio: start(store, spec, stdio=stdio), end)


def _attached(
    spec: Spec,
    begin: Callable[[tuple[int, int, int]], Child],
    end: Callable[[Child], None],
) -> int:
    """``begin`` the process with its stdio, copy and forward until it exits, ``end`` it."""
    forward = _in_main_thread()
    if forward:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD})
    try:
        if spec.tty or any(os.isatty(fd) for fd in ((0, 1, 2) if spec.interactive else (1, 2))):
            from tophan.run.stdio import Stdio

            io = Stdio(spec)
            try:
                child = begin(io.child)
                try:
                    io.started(child)
                    return io.wait(child, signals=forward)
                finally:
                    end(child)
            finally:
                io.close()
        # No terminal anywhere: the fds go in as they are, nothing to copy.
        null = -1 if spec.interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            child = begin((0 if null < 0 else null, 1, 2))
        finally:
            if null >= 0:
                os.close(null)
        try:
            if forward:
                _forward(child.poll, child.signal)
            return child.wait()
        finally:
            end(child)
    finally:
        if forward:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _in_main_thread() -> bool:
    # Signals can be waited for only in the main thread. (`threading` would cost a start
    # 1.6 ms to ask: on Linux the main thread's id is the process id.)
    return _thread.get_native_id() == os.getpid()


def _forward(poll: Callable[[], int | None], send: Callable[[int], None]) -> None:
    # Every one, those our terminal sends its foreground group (^C) included: the container is
    # in a session of its own, out of reach of our terminal.
    wanted = {*FORWARDED, signal.SIGCHLD}
    while poll() is None:
        info = signal.sigtimedwait(wanted, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        send(info.si_signo)


_SI_KERNEL = 0x80


# -- joining a running container (exec, health checks) ----------------------------------------

NAMESPACES = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt")  # the order setns needs


class Joined(Child):
    """A process started in a running container; ``pid`` is our child (it waits for the
    process inside, which had to be forked to enter the pid namespace)."""

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


def spawn_in(
    target: int,
    spec: Spec,
    *,
    cgroup: Cgroup | None = None,
    stdio: tuple[int, int, int] | None = None,
) -> Joined:
    """Run ``spec.argv`` inside the container whose init is ``target`` (its namespaces, root,
    cgroup, and the spec's user, env, workdir, capabilities and seccomp filter)."""
    _prepare(spec, None)
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    console = _console(spec)
    pid = os.fork()
    if pid == 0:
        _in_child(msg_w, stdio, lambda: _join(target, spec, cgroup, msg_w))
    os.close(msg_w)
    joined = Joined(pid)
    try:
        _close_console(spec)
        line = _Lines(msg_r).next()
        if line:
            joined.wait()
            raise _failure(line, None)
        if console is not None:
            joined.pty = _receive_pty(console)
    except BaseException:
        joined.kill()
        joined.wait()
        raise
    finally:
        os.close(msg_r)
        if console is not None:
            console.close()
    return joined


def exec_in(target: int, spec: Spec, *, cgroup: Cgroup | None = None) -> int:
    """``spawn_in`` and wait, with our stdio and signals as ``run`` gives them; returns the
    exit code."""

    def end(joined: Child) -> None:
        if joined.returncode is None:
            joined.signal(signal.SIGKILL)
            joined.wait()
        if joined.pty is not None:
            _close_quietly(joined.pty)
            joined.pty = None

    return _attached(spec, lambda stdio: spawn_in(target, spec, cgroup=cgroup, stdio=stdio), end)


def _join(target: int, spec: Spec, cgroup: Cgroup | None, msg_w: int) -> int:
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    fds = []
    for ns in NAMESPACES:
        theirs = f"/proc/{target}/ns/{ns}"
        try:
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{ns}").st_ino:
                continue
            fds.append(os.open(theirs, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError as e:
            if ns == "mnt":
                raise RunError("the container is not running") from e
    root = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if cgroup is not None:
        cgroup.add(os.getpid())
    for fd in fds:
        _libc.setns(fd)
        os.close(fd)
    # Joining the mount namespace puts us at its original root, not the one the container
    # pivoted into: chroot to the container's root, like nsenter --root.
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    os.chdir("/")
    pid = os.fork()
    if pid == 0:
        _become(spec, _user_and_session(spec), msg_w, ())  # raises on failure
    os.close(msg_w)
    _close_console(spec)
    for sig in FORWARDED:
        signal.signal(sig, lambda signo, _frame: os.kill(pid, signo))
    status = waitpid(pid, 0)
    assert status is not None
    return exit_code(status)


# -- the child's side (runs after fork; must never return into the caller's code) --------------


def _in_child(msg_w: int, stdio: tuple[int, int, int] | None, body: Callable[[], int]) -> NoReturn:
    """Run ``body`` in a forked child and exit with its code; a failure goes to the caller as
    one ``error CODE MESSAGE`` line. Never returns into the caller's code."""
    code = RC_SETUP
    try:
        # Out of the caller's session at once: its terminal's signals (^C to the foreground
        # group) are the caller's to forward, and the command will have a session of its own.
        os.setsid()
        _use_stdio(stdio)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        code = body()
    except _Exit as e:
        code = e.code
    except BaseException as e:
        try:
            os.write(msg_w, f"error {RC_SETUP} {_describe(e)}\n".encode())
        except OSError:
            pass
    os._exit(code)


def _use_stdio(stdio: tuple[int, int, int] | None) -> None:
    if stdio is not None:
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
            os.set_inheritable(target, True)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _describe(e: BaseException) -> str:
    if isinstance(e, TophanError):
        return str(e).replace("\n", " ")
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        return f"container setup failed: {e.strerror or e}{where}"
    return f"container setup failed: {type(e).__name__}: {e}".replace("\n", " ")


def _setup_process(
    ctr: Container, parent: int, go_r: int, msg_w: int, pass_fds: Sequence[int]
) -> int:
    spec = ctr.spec
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    # getppid() says 0 inside the new pid namespace: watch the caller through a pidfd instead.
    caller = os.pidfd_open(parent)
    _exit_if_gone(caller)
    flags = _libc.CLONE_NEWNS | _libc.CLONE_NEWUTS | _libc.CLONE_NEWIPC | _libc.CLONE_NEWPID
    if spec.network != "host":
        flags |= _libc.CLONE_NEWNET
    rootless = os.geteuid() != 0
    if rootless:
        flags |= _libc.CLONE_NEWUSER
    _libc.unshare(flags)
    if rootless:
        # Our ids in the new user namespace are written by the caller (newuidmap needs that).
        os.write(msg_w, b"map\n")
        if os.read(go_r, 1) != b"m":
            raise _Exit(RC_SETUP)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    pid = os.fork()
    if pid:
        os.write(msg_w, f"pid {pid}\n".encode())
        raise _Exit(0)
    # The init process. Our parent (setup) exits now; wait for the caller's go, which also
    # means we have been reparented to it (it reaped setup before writing).
    if os.read(go_r, 1) != b"g":
        raise _Exit(RC_SETUP)  # the caller is gone
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _exit_if_gone(caller)
    root = os.path.join(ctr.run_dir.path, "rootfs")
    _mount_root(ctr, root)
    _pivot(root)
    views = ctr.cgroup.views() if ctr.cgroup is not None else []
    _init_container(spec, msg_w, pass_fds, go_r, views)
    return RC_SETUP  # not reached: the command was exec'd, or an exception was raised


def _prepare(spec: Spec, cache_dir: str | None) -> None:
    """In the caller, before forking: compile the seccomp filter and import what the child
    needs after pivot_root (the host's module and library paths vanish then), and what it
    needs before: imported here once, not again in every container's init (~1 ms each)."""
    import fcntl  # noqa: F401
    import resource  # noqa: F401
    import select  # noqa: F401
    import struct  # noqa: F401
    import warnings  # noqa: F401  (os.execvpe imports it, through os.get_exec_path)

    from tophan.layer import mount  # noqa: F401  (the init mounts the root with it)
    from tophan.run import security

    if spec.tty:
        import socket  # noqa: F401
        import termios  # noqa: F401

    caps = spec.caps if spec.caps is not None else security.DEFAULT_CAPS
    profile = "default" if spec.seccomp else None
    spec.seccomp_bpf = security.compile_seccomp(profile, caps, cache_dir)


def _exit_if_gone(pidfd: int) -> None:
    """Exit if the caller died before our parent-death signal was armed."""
    import select

    p = select.poll()
    p.register(pidfd, select.POLLIN)
    if p.poll(0):
        raise _Exit(RC_SETUP)


def _mount_root(ctr: Container, root: str) -> None:
    from tophan.layer import mount

    spec = ctr.spec
    # Nothing we mount may propagate back to the host.
    _libc.mount("none", "/", None, _libc.MS_REC | _libc.MS_PRIVATE, None)
    d = ctr.run_dir.path
    mount.mount_overlay(
        root,
        spec.lowers,
        os.path.join(d, "upper"),
        os.path.join(d, "work"),
        userxattr=spec.userxattr,
        nodev=True,
    )
    privileged = is_privileged()
    if spec.userxattr and not privileged:
        _apply_recorded_owners(root, spec.lowers)
    _mount_proc(root)
    _mount_dev(root, privileged)
    _mount_sys(root, spec.network == "host" or not privileged)
    _write_etc(ctr, root)
    for b in spec.binds:
        _bind(b, root)
    for t in spec.tmpfs:
        target = _inside(root, t)
        os.makedirs(target, 0o755, exist_ok=True)
        _libc.mount("tmpfs", target, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=1777")


def _apply_recorded_owners(root: str, lowers: list[str]) -> None:
    """Give the directories of a rootless store's layers the owners they record.

    A rootless store keeps its files the user's (root's, here) and records other owners in
    ``user.tophan.owner`` (docs/layer-format.md), so without this a user's home from an earlier
    layer would be root's here, and a ``USER app`` process could not write into it. Directories
    only: chowning one in the merged view copies up its metadata alone (a file's copy-up would
    copy its data). Needs the owner's id mapped (subordinate ids); with one id, nothing to do."""
    owners: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for lower in lowers:  # top first: the first layer with a directory decides its owner
        for rel, owner in _recorded_dir_owners(lower):
            if rel not in seen:
                seen.add(rel)
                if owner is not None:
                    owners[rel] = owner
    top = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for rel, (uid, gid) in sorted(owners.items()):  # parents first
            try:
                _chown_root_dir(top, rel, uid, gid)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    return  # ids this namespace does not map: one id only
                # hidden (an upper layer's symlink or file on the way), or gone
    finally:
        os.close(top)


def _chown_root_dir(top: int, rel: str, uid: int, gid: int) -> None:
    """chown the directory ``rel`` below ``top`` if it is root's, never through a symlink: an
    upper layer may have made any component one (pointing at the host: we have not pivoted)."""
    fd = os.dup(top)
    try:
        for name in rel.split("/"):
            nxt = os.open(
                name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) == (0, 0):
            os.chown(f"/proc/self/fd/{fd}", uid, gid)
    finally:
        os.close(fd)


def _recorded_dir_owners(top: str) -> Iterator[tuple[str, tuple[int, int] | None]]:
    """Every directory below ``top`` (relative path) with its recorded owner, or None."""
    key = "user.tophan.owner"
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(top, rel) if rel else top) as it:
            dirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        for name in dirs:
            sub = f"{rel}/{name}" if rel else name
            stack.append(sub)
            owner = None
            try:
                u, g = os.getxattr(os.path.join(top, sub), key, follow_symlinks=False).split(b":")
                owner = (int(u), int(g))
            except (OSError, ValueError):
                pass
            yield sub, owner


def _inside(root: str, path: str) -> str:
    """``path`` of the container, resolved without leaving ``root`` (symlinks included, as the
    kernel would resolve them with ``root`` as /)."""
    parts = [p for p in path.split("/") if p and p != "."]
    below: list[str] = []  # the components of the resolved path under root
    links = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            if below:
                below.pop()
            continue
        nxt = os.path.join(root, *below, p)
        if os.path.islink(nxt):
            links += 1
            if links > 40:
                raise RunError(f"too many levels of symbolic links in {path}")
            link = os.readlink(nxt)
            if link.startswith("/"):
                below = []
            parts = [x for x in link.split("/") if x and x != "."] + parts
            continue
        below.append(p)
    return os.path.join(root, *below)


def _mount_proc(root: str) -> None:
    target = os.path.join(root, "proc")
    os.makedirs(target, 0o555, exist_ok=True)
    flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
    _libc.mount("proc", target, "proc", flags, None)


def _mount_dev(root: str, privileged: bool) -> None:
    dev = os.path.join(root, "dev")
    os.makedirs(dev, 0o755, exist_ok=True)
    # nodev and noexec: a node the container makes (with --cap-add MKNOD) cannot be opened
    # through the mounts it was given (the device cgroup also refuses it, tophan.run.devices):
    # the root, /dev, the tmpfs and bind mounts are all nodev, and the few devices a container
    # gets are bind mounts of the host's nodes, which keep their own mount's flags.
    flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC | _libc.MS_STRICTATIME
    _libc.mount("tmpfs", dev, "tmpfs", flags, "mode=755,size=65536k")
    for name in _DEV_NODES:
        path = os.path.join(dev, name)
        open(path, "w").close()
        _libc.mount(f"/dev/{name}", path, None, _libc.MS_BIND, None)
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    opts = "newinstance,ptmxmode=0666,mode=0620" + (",gid=5" if privileged else "")
    _libc.mount("devpts", pts, "devpts", _libc.MS_NOSUID | _libc.MS_NOEXEC, opts)
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
    _libc.mount("shm", shm, "tmpfs", flags, "mode=1777,size=65536k")
    mq = os.path.join(dev, "mqueue")
    os.mkdir(mq, 0o755)
    try:
        _libc.mount("mqueue", mq, "mqueue", flags, None)
    except OSError:
        os.rmdir(mq)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ):
        os.symlink(target, os.path.join(dev, name))


def _mount_sys(root: str, bind: bool) -> None:
    target = os.path.join(root, "sys")
    os.makedirs(target, 0o555, exist_ok=True)
    flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC | _libc.MS_RDONLY
    if not bind:
        try:
            _libc.mount("sysfs", target, "sysfs", flags, None)
            return
        except OSError:
            pass
    # sysfs can only be mounted by the owner of the network namespace: bind the host's, then
    # make the bind read-only (a separate remount: MS_RDONLY is ignored on the first bind).
    _libc.mount("/sys", target, None, _libc.MS_BIND | _libc.MS_REC, None)
    _libc.mount("none", target, None, _libc.MS_REMOUNT | _libc.MS_BIND | flags, None)


def _write_etc(ctr: Container, root: str) -> None:
    etc = _inside(root, "/etc")
    if not os.path.isdir(etc):
        return
    host = ctr.spec.hostname
    files: dict[str, str | None] = {
        "hostname": f"{host}\n",
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{host}\n",
    }
    if ctr.spec.network == "host" and os.path.exists("/etc/resolv.conf"):
        with open("/etc/resolv.conf") as f:
            files["resolv.conf"] = f.read()
    if is_private(ctr.spec.network):
        # The caller wrote both (tophan.net.attach), and keeps /etc/hosts current.
        files["hosts"] = files["resolv.conf"] = None
    for name, text in files.items():
        src = os.path.join(ctr.run_dir.path, name)
        if text is not None:
            with open(src, "w") as f:
                f.write(text)
        dst = os.path.join(etc, name)
        if os.path.islink(dst):
            continue  # never follow a symlink of the image out of the root
        if not os.path.exists(dst):
            open(dst, "w").close()
        _libc.mount(src, dst, None, _libc.MS_BIND, None)


def _bind(b: Bind, root: str) -> None:
    try:
        st = os.stat(b.source)
    except OSError as e:
        raise RunError(f"cannot mount {b.source}: {e.strerror}", "check the -v source") from e
    target = _inside(root, b.target)
    # the image's symlinks may lead elsewhere: the rule holds for where the mount really goes
    _check_mount_target("/" + os.path.relpath(target, root).removeprefix("."))
    if stat.S_ISDIR(st.st_mode):
        os.makedirs(target, 0o755, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        open(target, "w").close()
    _libc.mount(b.source, target, None, _libc.MS_BIND | _libc.MS_REC, None)
    _remount(target, readonly=b.readonly)


def _remount(target: str, *, readonly: bool) -> None:
    # Keep the flags the kernel locked on the original mount (nosuid, nodev…): a user
    # namespace may not clear them, and we would not want to.
    vfs = os.statvfs(target)
    keep = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, _libc.MS_NOSUID),
        (os.ST_NODEV, _libc.MS_NODEV),
        (os.ST_NOEXEC, _libc.MS_NOEXEC),
    ):
        if vfs.f_flag & st_flag:
            keep |= ms_flag
    flags = _libc.MS_REMOUNT | _libc.MS_BIND | _libc.MS_NODEV | keep
    if readonly:
        flags |= _libc.MS_RDONLY
    _libc.mount("none", target, None, flags, None)


def _pivot(root: str) -> None:
    # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
    os.chdir(root)
    _libc.pivot_root(".", ".")
    _libc.umount2(".", _libc.MNT_DETACH)
    os.chdir("/")


def _init_container(
    spec: Spec, msg_w: int, pass_fds: Sequence[int], go_r: int, views: list[tuple[str, str]]
) -> None:
    from tophan.run import security

    security.mask_paths("/")
    if spec.readonly_rootfs:
        _libc.mount("none", "/", None, _libc.MS_REMOUNT | _libc.MS_BIND | _libc.MS_RDONLY, None)
    _libc.sethostname(spec.hostname)
    if spec.network != "host":
        _loopback_up()
    _set_rlimits(spec.rlimits)
    # What needs neither the cgroup nor a change of privileges is done while the caller is
    # still moving us into the cgroup.
    user = _user_and_session(spec)
    # Now in our cgroup (the caller says "c"): its namespace makes that cgroup our root.
    if os.read(go_r, 1) != b"c":
        raise _Exit(RC_SETUP)
    os.close(go_r)
    try:
        _libc.unshare(_libc.CLONE_NEWCGROUP)
    except OSError:
        views = []  # kernels without cgroup namespaces still run containers (blind to limits)
    _mount_cgroups(views)
    _become(spec, user, msg_w, pass_fds, init=spec.init)


def _mount_cgroups(views: list[tuple[str, str]]) -> None:
    """The container's own cgroup, read-only at /sys/fs/cgroup, as podman mounts it: JVMs, Go
    and Node size themselves from those files. Mounted inside the cgroup namespace, whose root
    is the container's cgroup, so nothing of the host's tree above it shows; whatever the
    host's /sys brought along (--network host binds it) is covered first."""
    target = "/sys/fs/cgroup"
    flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
    if views == [("", "")] and _mount_cgroup2(target, flags):
        return
    _libc.mount("tmpfs", target, "tmpfs", flags, "mode=755,size=64k")
    if views == [("", "")]:
        # The kernel refuses (EBUSY) cgroup2 right on the host's cgroup2 mount that a bound
        # /sys brings (--network host): on the tmpfs that covers it, it goes.
        if _mount_cgroup2(target, flags):
            return
        views = []
    for name, controllers in views:
        d = os.path.join(target, name)
        os.mkdir(d, 0o555)
        try:
            _libc.mount("cgroup", d, "cgroup", flags | _libc.MS_RDONLY, controllers)
        except OSError:
            os.rmdir(d)  # e.g. a user namespace may not mount v1 hierarchies
            continue
        for ctrl in controllers.split(","):
            if ctrl != name:
                os.symlink(name, os.path.join(target, ctrl))  # cpu -> cpu,cpuacct, as hosts do
    _libc.mount("none", target, None, _libc.MS_REMOUNT | _libc.MS_RDONLY | flags, None)


def _mount_cgroup2(target: str, flags: int) -> bool:
    try:
        _libc.mount("cgroup2", target, "cgroup2", flags | _libc.MS_RDONLY, None)
    except OSError:
        return False
    return True


class _User:
    """Who the command runs as (from the container's /etc) and its environment."""

    def __init__(self, uid: int, gid: int, groups: list[int], env: dict[str, str]) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.env = env


def _user_and_session(spec: Spec) -> _User:
    """In the container, before :func:`_become`: the spec's user and environment, a session
    of our own (``_own_session``), and the working directory made if missing."""
    uid, gid, groups, home = resolve_user(spec.user)
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.hostname, "HOME": home}
    env.update(spec.env)
    _own_session(spec, uid)
    try:
        os.makedirs(spec.workdir, 0o755, exist_ok=True)
    except OSError:
        pass
    return _User(uid, gid, groups, env)


def _become(
    spec: Spec, user: _User, msg_w: int, pass_fds: Sequence[int], *, init: bool = False
) -> None:
    """Switch to ``user``, drop privileges, and exec the spec's command (in the container)."""
    from tophan.run import security

    uid = user.uid
    caps = spec.caps if spec.caps is not None else security.DEFAULT_CAPS
    security.drop_bounding(caps)
    if spec.no_new_privs:
        security.set_no_new_privs()
    # The filter goes in while we still hold CAP_SYS_ADMIN (the kernel wants that or
    # no_new_privs); it allows what the remaining steps call.
    if spec.seccomp_bpf:
        security.load_bpf(spec.seccomp_bpf)
    _libc.prctl(_libc.PR_SET_KEEPCAPS, 1)
    _set_ids(uid, user.gid, user.groups)
    # Credential changes reset the parent-death signal: set it again.
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    security.set_caps(caps, uid)
    try:
        os.chdir(spec.workdir)
    except OSError as e:
        raise RunError(f"cannot enter working directory {spec.workdir}: {e.strerror}") from e
    _close_fds(msg_w, pass_fds)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)  # Python ignores them; exec would keep that
    if init:
        _pid1(spec.argv, user.env, msg_w)
    _exec(spec.argv, user.env, msg_w)


def _own_session(spec: Spec, uid: int) -> None:
    """A session of our own, as runc gives: no terminal of the caller's stays ours (holding one
    is enough to type into it with TIOCSTI, run by the caller's shell once we exit). With
    ``spec.tty``, a terminal of our own instead: opened in the container's devpts, made our
    controlling terminal and stdio, its master sent to the caller."""
    import fcntl
    import struct

    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (setsid fails only then)
    if not spec.tty:
        null = -1
        for fd in (0, 1, 2):
            if os.isatty(fd):
                if null < 0:
                    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                os.dup2(null, fd)
        if null >= 0:
            os.close(null)
        return
    import socket
    import termios

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    # The peer from the master itself, not by its name in /dev/pts (TIOCGPTPEER, as runc).
    slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    try:
        os.fchown(slave, uid, -1)  # the user's terminal, as a login gives it
    except OSError:
        pass  # an id this (rootless) container does not map: _set_ids says so
    if spec.tty_size is not None:
        rows, cols = spec.tty_size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    console = socket.socket(fileno=spec.console_fd)
    spec.console_fd = -1
    try:
        socket.send_fds(console, [b"t"], [master])
    finally:
        console.close()
        os.close(master)


_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


def _pid1(argv: list[str], env: dict[str, str], msg_w: int) -> NoReturn:
    """``--init``: stay as pid 1 with the command as our child. Reap every process the pid
    namespace hands us, pass signals on to the command, and exit as it exits.

    We already have the command's user, capabilities and seccomp filter, as docker-init does.
    The kernel delivers to a namespace's init only the signals it handles; blocked ones count
    as handled, and are taken here with sigwaitinfo."""
    wanted = {*FORWARDED, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    child = os.fork()
    if child == 0:
        code = RC_SETUP
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            _exec(argv, env, msg_w)
        except _Exit as e:
            code = e.code
        os._exit(code)
    # The caller learns that the exec succeeded when the message pipe's last writer is gone.
    os.close(msg_w)
    _libc.libc().prctl(_PR_SET_NAME, b"tophan-init", 0, 0, 0)
    while True:
        info = signal.sigwaitinfo(wanted)
        if info.si_signo != signal.SIGCHLD:
            # One the terminal sent to the foreground group reached the command too.
            if info.si_code != _SI_KERNEL:
                _kill_quietly(child, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == child:
                os._exit(exit_code(status))


_PR_SET_NAME = 15


def _kill_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _set_ids(uid: int, gid: int, groups: list[int]) -> None:
    try:
        with open("/proc/self/setgroups") as f:
            may_setgroups = f.read().strip() != "deny"
    except OSError:
        may_setgroups = True
    try:
        if may_setgroups:
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        raise RunError(
            f"user {uid}:{gid} does not exist in this rootless container: only root is mapped",
            "add subordinate ids for your user to /etc/subuid and /etc/subgid (and install"
            " uidmap), or run as root inside",
        ) from e


def _exec(argv: list[str], env: dict[str, str], msg_w: int) -> None:
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        code = RC_NOT_FOUND if e.errno in (errno.ENOENT, errno.ENOTDIR) else RC_NOT_EXECUTABLE
        what = "not found" if code == RC_NOT_FOUND else e.strerror
        os.write(msg_w, f"error {code} cannot run {argv[0]}: {what}\n".encode())
        raise _Exit(code) from e


def _close_fds(keep: int, pass_fds: Sequence[int]) -> None:
    # Everything above stderr but the message pipe (close-on-exec) and what the caller passes.
    for fd in sorted(int(x) for x in os.listdir("/proc/self/fd")):
        if fd > 2 and fd != keep and fd not in pass_fds:
            _close_quietly(fd)
    for fd in pass_fds:
        os.set_inheritable(fd, True)


def _set_rlimits(rlimits: dict[str, tuple[int, int]]) -> None:
    import resource

    for name, limits in rlimits.items():  # names were checked by Spec.check
        resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), limits)


def _loopback_up() -> None:
    import fcntl
    import struct

    # socket(2) through libc: the socket module is a slow import for one ioctl.
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP, AF_INET, SOCK_DGRAM = 0x8913, 0x8914, 0x1, 2, 2
    fd = _libc.libc().socket(AF_INET, SOCK_DGRAM | os.O_CLOEXEC, 0)
    if fd < 0:
        _libc.raise_errno()
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(fd, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        os.close(fd)


# -- users -------------------------------------------------------------------------------------


MAX_ID = 2**31 - 1  # as runc: (uid_t)-1 means "unchanged" to setresuid, and above is unsafe


def check_id(n: int, what: str) -> int:
    """A uid or gid a container may run with: 0..2**31-1. 4294967295 is (uid_t)-1, which
    setresuid reads as "leave it unchanged": the process would stay root."""
    if not 0 <= n <= MAX_ID:
        raise UsageError(f"invalid {what} id {n}: ids are 0 to {MAX_ID}", "use an id in range")
    return n


def resolve_user(user: str | None, etc: str = "/etc") -> tuple[int, int, list[int], str]:
    """``user[:group]`` (names or numbers) -> uid, gid, supplementary gids, home, like Docker.

    Names are looked up in the container's /etc/passwd and /etc/group; numeric ids need not
    exist there. Unknown names are an error."""
    spec = user or "0"
    uname, _, gname = spec.partition(":")
    passwd = _table(os.path.join(etc, "passwd"))
    groups = _table(os.path.join(etc, "group"))
    entry = None
    if uname.isdigit():
        uid = check_id(int(uname), "user")
        entry = next((e for e in passwd if e[2:3] == [uname]), None)
    else:
        entry = next((e for e in passwd if e[0] == uname), None)
        if entry is None:
            raise RunError(f"unable to find user {uname}: no matching entries in passwd file")
        uid = _id_field(entry[2], "user", uname)
    gid = (
        _id_field(entry[3], "group", entry[0])
        if entry is not None and len(entry) > 3 and entry[3]
        else 0
    )
    if gname:
        if gname.isdigit():
            gid = check_id(int(gname), "group")
        else:
            g = next((e for e in groups if e[0] == gname), None)
            if g is None:
                raise RunError(f"unable to find group {gname}: no matching entries in group file")
            gid = _id_field(g[2], "group", gname)
    home = entry[5] if entry is not None and len(entry) > 5 and entry[5] else "/"
    # Only the groups /etc/group lists the user in (runc, podman): never the primary gid again.
    supplementary = []
    if entry is not None and not gname:
        name = entry[0]
        for g in groups:
            if len(g) > 3 and name in g[3].split(","):
                supplementary.append(_id_field(g[2], "group", g[0]))
    return uid, gid, sorted(set(supplementary)), home


def _id_field(field: str, what: str, name: str) -> int:
    """An id from the image's /etc/passwd or /etc/group: a hostile image may write anything."""
    if not field.isdigit():
        raise RunError(f"invalid {what} id {field!r} for {name} in the image's /etc files")
    try:
        return check_id(int(field), what)
    except UsageError as e:
        raise RunError(f"{e.message} (for {name} in the image's /etc files)") from None


def _table(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and line[0] != "#"]
    except OSError:
        return []
