"""Rootless test infrastructure: a real unprivileged user, an interpreter it can run, and a runner.

Tests that need to prove something works *without* root use the ``rootless_user`` fixture (one
user per session) and run code as that user with :func:`run_as_user` or :func:`python_as_user`,
optionally inside ``unshare -Urm`` (a user + mount namespace mapping the user to root there).

Why the extra machinery:

- The test interpreter usually lives under ``/root`` (pyenv; mode 0700), which another user
  cannot execute. We build a venv from Debian's ``/usr/bin/python3`` in a world-readable dir
  under ``/tmp``, with a copy of this checkout's ``src`` (found relative to this file, so a
  fresh clone anywhere works) on its path through a ``.pth`` file, and the ``tophan``/``overlayd``
  launchers in its ``bin``.
- pytest's ``tmp_path`` is 0700 root: the user works in dirs from ``rootless_dir`` instead,
  owned by it, under the same world-traversable base dir.

Cleanup, even when a test fails: every process runs in its own session and is killed with it
on timeout; at the end of each test and of the session any process still running as the user is
killed (by pid), then the user and its group are deleted and the base dir removed. Mounts made
inside ``unshare -Urm`` die with that namespace, i.e. with the process.

(PYTEST_DONT_REWRITE: no asserts here, and test modules import it before pytest loads it as a
plugin, which would otherwise warn that it cannot be rewritten.)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
TOOLS = ("useradd", "userdel", "groupdel", "setpriv", "unshare")


@dataclass(frozen=True)
class RootlessUser:
    name: str
    uid: int
    gid: int
    base: Path  # root-owned, world-traversable; everything below is removed at the end
    home: Path  # owned by the user: its $HOME, $TMPDIR's parent and the default cwd
    python: str  # an interpreter the user can execute, with `tophan` importable
    bin: Path  # the venv's bin: python3, tophan, overlayd (first on the user's PATH)
    can_unshare: bool  # whether `unshare -Urm` works for this user on this machine


def unavailable_reason() -> str | None:
    """Why rootless tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "rootless tests need root to create a user"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"rootless tests need {SYSTEM_PYTHON} (Debian's python3 and python3-venv)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"rootless tests need {', '.join(missing)} (passwd, util-linux)"
    return None


# -- running as the user -----------------------------------------------------------------------


def user_env(user: RootlessUser, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment processes of ``user`` get: a clean one, plus ``env``."""
    out = {
        "PATH": f"{user.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(user.home),
        "TMPDIR": str(user.home / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    out.update(env or {})
    return out


@overload
def run_as_user(
    user: RootlessUser,
    argv: Sequence[str],
    *,
    unshare: bool,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    text: Literal[True] = True,
) -> subprocess.CompletedProcess[str]: ...


@overload
def run_as_user(
    user: RootlessUser,
    argv: Sequence[str],
    *,
    unshare: bool,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    text: Literal[False],
) -> subprocess.CompletedProcess[bytes]: ...


def run_as_user(
    user: RootlessUser,
    argv: Sequence[str],
    *,
    unshare: bool,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    text: bool = True,
) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """Run ``argv`` as ``user`` (no capabilities), in ``unshare -Urm`` if ``unshare``.

    Output is captured (decoded if ``text``); ``cwd`` defaults to the user's home. The process
    gets its own session; on timeout the whole session is killed and TimeoutExpired raised.
    Skips the test if ``unshare`` is asked for and user namespaces are unavailable here.
    """
    if unshare and not user.can_unshare:
        pytest.skip("unprivileged user namespaces are disabled on this machine")
    full = [
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--init-groups",
        "--inh-caps=-all",
        "--pdeathsig=KILL",  # dies with the test process, whatever happens to it
    ]
    if unshare:
        full += ["unshare", "--user", "--map-root-user", "--mount"]
    full += list(argv)
    data = input.encode() if isinstance(input, str) else input
    with subprocess.Popen(
        full,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd if cwd is not None else user.home,
        env=user_env(user, env),
        start_new_session=True,
    ) as p:
        try:
            out, err = p.communicate(data, timeout=timeout)
        except BaseException:
            _kill_session(p.pid)
            p.communicate()
            raise
    if text:
        return subprocess.CompletedProcess(
            full, p.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
    return subprocess.CompletedProcess(full, p.returncode, out, err)


def python_as_user(
    user: RootlessUser,
    code: str,
    *,
    unshare: bool,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a (dedented) Python snippet as ``user`` with ``tophan`` importable."""
    argv = [user.python, "-c", textwrap.dedent(code)]
    return run_as_user(user, argv, unshare=unshare, input=input, env=env, cwd=cwd, timeout=timeout)


def _kill_session(sid: int) -> None:
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def user_pids(uid: int) -> list[int]:
    """Live (not zombie) processes whose real or effective uid is ``uid``, seen from here."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue  # gone meanwhile
        real, effective = (int(x) for x in status["Uid"].split()[:2])
        if uid in (real, effective) and not status["State"].strip().startswith("Z"):
            pids.append(int(entry))
    return pids


def kill_user_processes(uid: int, *, wait: float = 10.0) -> list[int]:
    """SIGKILL every process of ``uid``, by pid, until none is left; returns those killed."""
    killed: list[int] = []
    deadline = time.monotonic() + wait
    while pids := user_pids(uid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of uid {uid} survive SIGKILL: {pids}")
        time.sleep(0.02)
    return killed


# -- creating and removing the user ------------------------------------------------------------


def _make_venv(base: Path) -> tuple[str, Path]:
    """A venv of Debian's python with a copy of our src (and our deps, if they fit) on its path."""
    venv = base / "venv"
    subprocess.run(
        [SYSTEM_PYTHON, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
    )
    python = str(venv / "bin" / "python")
    probe = (
        "import sys, sysconfig; print(sysconfig.get_path('purelib')); print(*sys.version_info[:2])"
    )
    purelib, version = subprocess.run(
        [python, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    src = base / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    Path(purelib, "tophan-src.pth").write_text(f"{src}\n")
    # Compiled once here (readable by all), so the user's interpreters start fast.
    subprocess.run([python, "-m", "compileall", "-q", str(src)], check=True, capture_output=True)
    if version == "{} {}".format(*sys.version_info[:2]):
        _copy_deps(Path(purelib))
    for launcher in ("tophan", "overlayd"):
        _copy_launcher(REPO / "bin" / launcher, venv / "bin" / launcher, python)
    for tree in (venv, src):
        _world_readable(tree)  # whatever the umask of whoever cloned or runs this
    return python, venv / "bin"


def _world_readable(top: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(top):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o555)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def _copy_deps(purelib: Path) -> None:
    # tophan's dependencies. Our interpreter has them; Debian's has the same ABI when the
    # versions match, so the installed packages work as they are.
    for module in ("zstandard", "pyseccomp"):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name.startswith("__init__."):
            shutil.copytree(
                origin.parent, purelib / module, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(origin, purelib / origin.name)


def _copy_launcher(src: Path, dest: Path, python: str) -> None:
    if not src.exists():
        return
    _, _, body = src.read_text().partition("\n")
    dest.write_text(f"#!{python}\n{body}")
    dest.chmod(0o755)


def _user_mkdir(path: Path, user: RootlessUser | tuple[int, int], mode: int = 0o755) -> Path:
    uid, gid = (user.uid, user.gid) if isinstance(user, RootlessUser) else user
    path.mkdir(mode=mode)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def _unmount_below(base: Path) -> None:
    # A root test may have mounted something under base: unmount before rmtree walks into it.
    prefix = os.fsencode(base) + b"/"
    with open("/proc/self/mountinfo", "rb") as f:
        points = [line.split()[4] for line in f]
    for mp in reversed(points):
        path = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), mp)
        if path.startswith(prefix):
            subprocess.run(["umount", "-l", path], check=False, capture_output=True)


def _drop_subids(name: str) -> None:
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(path).read_text().splitlines(keepends=True)
        except FileNotFoundError:
            continue
        kept = [line for line in lines if line.split(":", 1)[0] != name]
        if kept != lines:
            tmp = Path(f"{path}.tophan-test-{uuid.uuid4().hex[:8]}")
            tmp.write_text("".join(kept))
            tmp.chmod(0o644)
            os.replace(tmp, path)


def _remove_user(name: str, uid: int | None, base: Path) -> list[str]:
    problems = []
    if uid is not None:
        try:
            kill_user_processes(uid)
        except RuntimeError as e:
            problems.append(str(e))
        # userdel leaves the user's subordinate ids behind: drop them first.
        _drop_subids(name)
        p = subprocess.run(["userdel", name], capture_output=True, text=True)
        if p.returncode != 0:
            problems.append(f"userdel {name}: {p.stderr.strip()}")
    group = subprocess.run(["getent", "group", name], capture_output=True)
    if group.returncode == 0:
        subprocess.run(["groupdel", name], capture_output=True)
    _unmount_below(base)
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        problems.append(f"could not remove {base}")
    return problems


SUBID_COUNT = 65536


def _free_subid_start() -> int:
    """A subordinate id range no entry of /etc/subuid or /etc/subgid overlaps (and above any
    real uid), so users made by concurrent test runs never share ids."""
    taken: list[tuple[int, int]] = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(path).read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                taken.append((int(fields[1]), int(fields[1]) + int(fields[2])))
    while True:
        start = (uuid.uuid4().int % 20000 + 100) * SUBID_COUNT  # 6.5M .. 1.3G
        if all(start + SUBID_COUNT <= a or start >= b for a, b in taken):
            return start


@contextmanager
def rootless_user_context(*, subids: bool = False) -> Iterator[RootlessUser]:
    """A fresh unprivileged user with everything it needs; all of it removed on exit.
    ``subids``: give it a range of subordinate uids and gids (``newuidmap`` maps them)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if subids and not (shutil.which("newuidmap") and shutil.which("usermod")):
        pytest.skip("subordinate ids need newuidmap (Debian's uidmap) and usermod")
    name = f"tph{uuid.uuid4().hex[:10]}"
    base = Path(tempfile.mkdtemp(prefix=f"tophan-rootless-{name}-", dir="/tmp"))
    base.chmod(0o755)
    uid: int | None = None
    try:
        subprocess.run(
            [
                "useradd", "--system", "--user-group", "--no-create-home",
                "--home-dir", str(base / "home"), "--shell", "/usr/sbin/nologin", name,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        pw = pwd.getpwnam(name)
        uid = pw.pw_uid
        if subids:
            first = _free_subid_start()
            ids = f"{first}-{first + SUBID_COUNT - 1}"
            subprocess.run(
                ["usermod", "--add-subuids", ids, "--add-subgids", ids, name],
                check=True,
                capture_output=True,
            )
        python, bindir = _make_venv(base)
        home = _user_mkdir(base / "home", (pw.pw_uid, pw.pw_gid))
        _user_mkdir(home / "tmp", (pw.pw_uid, pw.pw_gid), 0o700)
        _user_mkdir(base / "work", (pw.pw_uid, pw.pw_gid))
        user = RootlessUser(name, pw.pw_uid, pw.pw_gid, base, home, python, bindir, True)
        user = _checked(user)
        yield user
    finally:
        problems = _remove_user(name, uid, base)
        if problems:
            raise RuntimeError("rootless cleanup: " + "; ".join(problems))


def _checked(user: RootlessUser) -> RootlessUser:
    """Fail now, with the reason, if the user cannot run our interpreter at all."""
    check = [user.python, "-c", "import tophan.layer.mount, os; print(os.getuid())"]
    p = run_as_user(user, check, unshare=False, timeout=120)
    if p.returncode != 0 or p.stdout.strip() != str(user.uid):
        raise RuntimeError(f"user {user.name} cannot run {user.python}: {p.stderr.strip()}")
    ns = run_as_user(user, ["true"], unshare=True, timeout=120)
    if ns.returncode == 0:
        return user
    return dataclasses.replace(user, can_unshare=False)


# -- fixtures (re-exported by conftest.py) -----------------------------------------------------


@pytest.fixture(scope="session")
def rootless_user() -> Iterator[RootlessUser]:
    """One unprivileged user for the session (skips where that cannot be made)."""
    with rootless_user_context() as user:
        yield user


@pytest.fixture(scope="session")
def subid_user() -> Iterator[RootlessUser]:
    """One unprivileged user with 65536 subordinate uids and gids, for the session."""
    with rootless_user_context(subids=True) as user:
        yield user


@pytest.fixture
def rootless_dir(rootless_user: RootlessUser) -> Iterator[Path]:
    """A fresh empty dir owned by the rootless user (e.g. for a store). Also the place to
    ``cd``: nothing of it, and no process of the user, survives the test."""
    d = _user_mkdir(rootless_user.base / "work" / uuid.uuid4().hex[:12], rootless_user)
    try:
        yield d
    finally:
        kill_user_processes(rootless_user.uid)
        _unmount_below(d)
        shutil.rmtree(d, ignore_errors=True)
