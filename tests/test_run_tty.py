"""Terminals (issue 8 #1, #9): a container never holds its caller's terminal.

A process holding a terminal can type into it (TIOCSTI): what a container typed into the
terminal of `tophan run` was read by the caller's shell after the container exited, and run as
root. Each test runs `tophan` under a real pseudo-terminal made here (the controlling terminal of
a shell, as a user's is), with a static program that tries TIOCSTI on every terminal it can
reach, and checks what the shell reads next. Then `-t` (a terminal of the container's own,
proxied: size, resize, raw mode given back, EOF and exit codes through), `-i`, TERM rules, and
the same for `app exec`.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, busybox_full_rootfs, run_cli
from rootless import RootlessUser, run_as_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

TOPHAN = str(BIN / "tophan")
TARGETS = ("fd0", "fd1", "fd2", "tty")  # what /tiocsti types into


@pytest.fixture
def store(root: Path, tmp_path: Path) -> Path:
    """Layers `base` (busybox) and `ti` (/tiocsti, tests/data/tiocsti.c built static here)."""
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    layer = tmp_path / "ti"
    layer.mkdir()
    src = Path(__file__).parent / "data/tiocsti.c"
    cc = subprocess.run(["cc", "-static", "-O2", "-o", str(layer / "tiocsti"), str(src)])
    assert cc.returncode == 0, "a C compiler with static libc (gcc, libc6-dev) is needed"
    assert run_cli("--root", str(root), "layer", "create", "ti", "--from", str(layer)).rc == 0
    return root


def _ctty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Term:
    """``argv`` in a new session whose controlling terminal is a pty of ours (``master``)."""

    def __init__(self, argv: list[str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        set_size(slave, rows, cols)
        self.initial = termios.tcgetattr(slave)  # before anything runs on it
        env = {"PATH": os.environ["PATH"], "TERM": "outer-term", "HOME": "/root"}
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_ctty,
            env=env,
        )
        os.close(slave)
        self.out = b""
        self.seen = 0  # what expect() has matched up to

    def expect(self, text: str, timeout: float = 60) -> str:
        """Read until ``text`` shows (after what earlier calls matched); what came before it."""
        want = text.encode()
        while want not in self.out[self.seen :]:
            if not self._read(timeout):
                raise AssertionError(f"no {text!r} in {self.out.decode(errors='replace')!r}")
        i = self.out.index(want, self.seen)
        before = self.out[self.seen : i].decode(errors="replace")
        self.seen = i + len(want)
        return before

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return False
        self.out += data
        return bool(data)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Read to the end; the exit code and everything after the last match."""
        while self._read(timeout):
            pass
        rc = self.proc.wait(timeout)
        return rc, self.out[self.seen :].decode(errors="replace")

    def close(self) -> bool:
        """End it; True if it had to be killed (a killed `tophan run` leaves its cgroup)."""
        killed = self.proc.poll() is None
        if killed:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)
        return killed


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@pytest.fixture
def term() -> Iterator[list[Term]]:
    made: list[Term] = []
    yield made
    if any([t.close() for t in made]):
        _prune_killed_runs()


def _prune_killed_runs() -> None:
    """What gc does for a SIGKILLed run, without gc's grace period (nothing else runs now)."""
    import time

    from tophan.run import cgroup
    from tophan.run.container import prune_stale_cgroups

    if cgroup.unavailable(cgroup.Limits()) is not None:
        return
    deadline = time.monotonic() + 10  # the container dies with its caller (parent-death signal)
    while any(n.startswith("run-") for n in cgroup.list_ours()) and time.monotonic() < deadline:
        prune_stale_cgroups(min_age=0)
        time.sleep(0.05)


def _shell(term: list[Term], command: list[str], **kw: int) -> Term:
    """A shell that runs ``command`` on the terminal, says EXITED:rc, then reads a line, as
    the caller's shell would after the container: GOT:[line]."""
    script = '"$@"; echo "EXITED:$?"; read x; echo "GOT:[$x]"'
    t = Term(["/bin/sh", "-c", script, "sh", *command], **kw)
    term.append(t)
    return t


def _after_container(t: Term) -> str:
    """Let the shell read its next line: it gets what was typed into its terminal meanwhile,
    else the empty line we send now."""
    t.expect("EXITED:")
    t.send(b"\n")
    got = t.expect("]").rpartition("GOT:[")[2]
    assert t.finish()[0] == 0
    return got


@pytest.mark.parametrize(
    "flags",
    [[], ["-i"], ["-t"], ["-it"], ["--privileged"], ["--privileged", "-it"]],
    ids=["plain", "i", "t", "it", "privileged", "privileged-it"],
)
def test_tiocsti_from_the_container_never_reaches_the_callers_terminal(
    store: Path, term: list[Term], flags: list[str]
) -> None:
    """The attack: the container types into every terminal it holds; the caller's shell, which
    reads next, must get only what the user typed. (Before the fix, "INJECTED" was read and run
    by the shell.) --privileged has CAP_SYS_ADMIN, which TIOCSTI accepts for any terminal the
    process holds: only not holding ours protects."""
    run = [TOPHAN, "--root", str(store), "run", *flags, "-l", "ti", "-l", "base", "--"]
    t = _shell(term, [*run, "/tiocsti"])
    report = t.expect("EXITED:")
    assert t.expect("\n").strip() == "0", report
    t.send(b"\n")
    got = t.expect("]").rpartition("GOT:[")[2]
    assert got == "", f"the container typed {got!r} into the caller's shell; it said {report!r}"
    assert t.finish()[0] == 0
    lines = [
        x.strip() for x in report.splitlines() if x.strip()[:3] in ("fd0", "fd1", "fd2", "tty")
    ]
    assert len(lines) == 4, report
    if "t" not in "".join(flags).replace("--privileged", ""):
        # No terminal at all: pipes or /dev/null, and no controlling terminal.
        assert all(not x.endswith(" ok") for x in lines), report


def test_tiocsti_from_app_exec_never_reaches_the_callers_terminal(
    store: Path, term: list[Term], own_netns: None
) -> None:
    name = f"tty{uuid.uuid4().hex[:6]}"
    base = [TOPHAN, "--root", str(store)]
    app = subprocess.run(
        [*base, "app", "create", name, "-l", "ti", "-l", "base", "--", "sleep", "1000"]
    )
    assert app.returncode == 0
    try:
        assert subprocess.run([*base, "app", "start", name]).returncode == 0
        for flags in ([], ["-i"], ["-it"]):
            t = _shell(term, [*base, "app", "exec", *flags, name, "/tiocsti"])
            assert _after_container(t) == "", flags
    finally:
        subprocess.run([*base, "app", "rm", "-f", name], check=False)


def _modes(fd: int) -> list[object]:
    return termios.tcgetattr(fd)


def test_tty_is_the_containers_own_at_our_size_and_follows_resizes(
    store: Path, term: list[Term]
) -> None:
    run = [TOPHAN, "--root", str(store), "run", "-it", "-l", "base", "--"]
    script = (
        "tty; stty size; echo TERM=$TERM; cut -d' ' -f6,7 /proc/self/stat;"
        " trap 'stty size; exit 5' WINCH; echo READY; while :; do sleep 0.05; done"
    )
    t = _shell(term, [*run, "sh", "-c", script], rows=33, cols=101)
    before = t.initial
    head = t.expect("READY")
    assert head.split()[:4] == ["/dev/pts/0", "33", "101", "TERM=xterm"], head
    tty_nr = head.split()[5]
    assert int(tty_nr) != 0, "the terminal is not the command's controlling terminal"
    raw = _modes(t.master)
    assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG), "ours is not raw"
    set_size(t.master, 40, 120)  # the kernel sends SIGWINCH to tophan, the foreground
    assert t.expect("EXITED:").split()[-2:] == ["40", "120"]
    assert t.expect("\n").strip() == "5", "the exit code did not come through -t"
    assert _modes(t.master) == before, "our terminal was not given back as it was"
    t.send(b"\n")
    t.expect("GOT:[]")


def test_tty_passes_input_and_gives_the_terminal_back_when_killed(
    store: Path, term: list[Term]
) -> None:
    # --init: the command is pid 2, which SIGKILL can end (pid 1 ignores it from inside).
    run = [TOPHAN, "--root", str(store), "run", "-it", "--init", "-l", "base", "--"]
    t = _shell(term, [*run, "sh", "-c", "echo READY; read x; echo got-$x; kill -9 $$"])
    before = t.initial
    t.expect("READY")
    t.send(b"hello\r")  # raw: the container's terminal makes the newline
    t.expect("got-hello")
    assert t.expect("\n") and t.expect("EXITED:") is not None
    assert t.expect("\n").strip() == "137"
    assert _modes(t.master) == before
    t.send(b"\n")
    t.expect("GOT:[]")


def test_tty_without_a_terminal_of_ours_passes_eof(store: Path) -> None:
    """-it from a pipe: our EOF becomes the terminal's EOF character, the command ends."""
    r = subprocess.run(
        [TOPHAN, "--root", str(store), "run", "-it", "-l", "base", "--", "sh", "-c",
         "cat; echo END; exit 3"],
        input=b"one\ntwo",
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 3, r
    assert b"two" in r.stdout and r.stdout.rstrip().endswith(b"END"), r.stdout


def test_interactive_without_tty_proxies_our_terminal(store: Path, term: list[Term]) -> None:
    """-i from a terminal: the container reads a pipe (we copy our terminal's lines into it),
    ^D ends its input; without -i its stdin is /dev/null."""
    run = [TOPHAN, "--root", str(store), "run", "-i", "-l", "base", "--"]
    script = "ls -l /proc/self/fd/ 2>/dev/null | grep -c pts; echo READY; cat; echo CATDONE; exit 4"
    t = _shell(term, [*run, "sh", "-c", script])
    assert t.expect("READY").split()[-1] == "0", "a terminal of ours went in"
    t.send(b"abc\n")
    t.expect("abc")  # our terminal's echo
    t.expect("abc")  # cat's
    t.send(b"\x04")
    t.expect("CATDONE")
    assert t.expect("EXITED:") is not None and t.expect("\n").strip() == "4"
    t.send(b"\n")
    t.expect("GOT:[]")

    t = _shell(term, [TOPHAN, "--root", str(store), "run", "-l", "base", "--", "sh", "-c",
                      "readlink /proc/self/fd/0; cat; echo NOINPUT"])  # fmt: skip
    assert t.expect("NOINPUT").split() == ["/dev/null"]
    assert _after_container(t) == ""


def test_each_process_has_a_session_of_its_own(store: Path) -> None:
    """runc's rule: the command leads a session of its own, with no controlling terminal."""
    r = run_cli("--root", str(store), "run", "-l", "base", "--", "cut", "-d ", "-f1,6,7",
                "/proc/self/stat")  # fmt: skip
    assert r.out.split() == ["1", "1", "0"], (r.out, r.err)


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        ([], "unset"),
        (["-t"], "xterm"),
        (["-t", "-e", "TERM=vt220"], "vt220"),
        (["-t", "-e", "TERM"], "from-us"),
        (["-e", "TERM"], "from-us"),
        (["-e", "TERM=vt100"], "vt100"),
    ],
)
def test_term_is_xterm_with_a_tty_and_never_inherited(
    store: Path, flags: list[str], want: str
) -> None:
    env = {**os.environ, "TERM": "from-us"}
    r = subprocess.run(
        [TOPHAN, "--root", str(store), "run", *flags, "-l", "base", "--", "sh", "-c",
         "echo T=${TERM-unset}"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.stdout.strip() == f"T={want}", (r.stdout, r.stderr)


def test_app_exec_it(store: Path, term: list[Term], own_netns: None) -> None:
    name = f"tty{uuid.uuid4().hex[:6]}"
    base = [TOPHAN, "--root", str(store)]
    created = subprocess.run([*base, "app", "create", name, "-l", "base", "--", "sleep", "1000"])
    assert created.returncode == 0
    try:
        assert subprocess.run([*base, "app", "start", name]).returncode == 0
        # The app's init leads its own session, without a terminal.
        init = subprocess.run(
            [*base, "app", "exec", name, "cut", "-d ", "-f1,6,7", "/proc/1/stat"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert init.stdout.split() == ["1", "1", "0"], (init.stdout, init.stderr)
        script = "tty; stty size; echo TERM=$TERM; echo READY; read x; echo got-$x; exit 6"
        t = _shell(term, [*base, "app", "exec", "-it", name, "sh", "-c", script], rows=20)
        before = t.initial
        assert t.expect("READY").split() == ["/dev/pts/0", "20", "80", "TERM=xterm"]
        t.send(b"typed\r")
        t.expect("got-typed")
        t.expect("EXITED:")
        assert t.expect("\n").strip() == "6"
        assert _modes(t.master) == before
        t.send(b"\n")
        t.expect("GOT:[]")
        script = "echo T=${TERM-unset}; readlink /proc/$$/fd/0"
        plain = subprocess.run(
            [*base, "app", "exec", name, "sh", "-c", script],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert plain.stdout.split() == ["T=unset", "/dev/null"], plain
    finally:
        subprocess.run([*base, "app", "rm", "-f", name], check=False)


@pytest.mark.rootless
def test_rootless_tty(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    """The pty comes from the devpts of the container's user namespace just as well."""
    rootfs = busybox_full_rootfs(rootless_dir / "rootfs-src")
    for dirpath, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), rootless_user.uid, rootless_user.gid)
    os.chown(rootfs, rootless_user.uid, rootless_user.gid)

    def tophan(*args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["tophan", "--root", str(rootless_dir / "store"), *args]
        return run_as_user(rootless_user, argv, unshare=False, cwd=rootless_dir, input=data)

    assert tophan("init").returncode == 0
    assert tophan("layer", "create", "base", "--from", str(rootfs)).returncode == 0
    r = tophan("run", "-it", "-l", "base", "--", "sh", "-c", "tty; cat; exit 3", data="abc\n")
    assert r.returncode == 3, r.stderr
    # the terminal echoes the input as soon as it arrives, maybe before `tty` prints
    lines = r.stdout.split()
    assert "/dev/pts/0" in lines and "abc" in lines, r.stdout


def test_run_options_keep_i_and_t_and_apps_refuse_them(store: Path) -> None:
    from tophan._internal.root import StoreRoot
    from tophan.app.apps import Apps, AppSpec
    from tophan.errors import UsageError
    from tophan.run.options import RunOptions

    opts = RunOptions(layers=["base"], command=["true"])
    opts.update({"interactive": True, "tty": True})
    assert RunOptions.from_json(opts.to_json()) == opts
    spec = opts.spec(StoreRoot(str(store)))
    assert spec.tty and spec.interactive and spec.env["TERM"] == "xterm"
    with pytest.raises(UsageError, match="no terminal or stdin"):
        Apps(StoreRoot(str(store))).create("tterm", AppSpec(opts))
