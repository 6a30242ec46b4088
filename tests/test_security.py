"""Capabilities, no_new_privs, the default seccomp filter and masked paths, for real.

Every case that changes the process runs in a forked child that reports back through a pipe, so
the test process itself is never restricted. A child always leaves with os._exit, runs in its own
process group (killed whole at the end, so nothing it started survives a failure), and makes its
mounts in its own mount namespace (gone with it).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import mmap
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tophan._internal import libc as _libc
from tophan.errors import TophanError, UsageError
from tophan.run import security

BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs /bin/busybox"),
]

security.preload()  # before any fork: the children must not import after seccomp is on
import pyseccomp  # noqa: E402  (loaded by preload)

# -- running things in a child -------------------------------------------------------------------


def _read_until_eof(fd: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("child did not finish in time")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _reap(pid: int) -> int:
    """Kill what is left of the child's process group, then collect the child's status."""
    try:
        os.killpg(pid, signal.SIGKILL)  # the child is at worst a zombie: its pgid is not reused
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


def _fork(child: Callable[[int], None], timeout: float) -> tuple[bytes, int]:
    """Fork; ``child(w)`` runs in the child (which then _exits), the parent gets what it wrote."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setpgid(0, 0)
            child(w)
        finally:
            os._exit(0)
    os.close(w)
    try:
        out = _read_until_eof(r, time.monotonic() + timeout)
    finally:
        os.close(r)
        status = _reap(pid)
    return out, status


def in_child(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``fn()``'s JSON-able result, computed in a child; its exception is re-raised here."""

    def child(w: int) -> None:
        try:
            reply = {"ok": fn()}
        except BaseException as e:
            reply = {"error": type(e).__name__, "message": str(e), "tb": traceback.format_exc()}
        os.write(w, json.dumps(reply).encode())

    out, status = _fork(child, timeout)
    assert out, f"child died without a reply (wait status {status:#x})"
    reply = json.loads(out)
    if "error" in reply:
        raise AssertionError(f"in child: {reply['error']}: {reply['message']}\n{reply['tb']}")
    return reply["ok"]


def exec_in_child(
    setup: Callable[[], None], argv: list[str], timeout: float = 30.0
) -> tuple[str, int]:
    """Run ``setup()`` in a child, then exec ``argv`` there; its output and wait status."""

    def child(w: int) -> None:
        try:
            setup()
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.execv(argv[0], argv)
        except BaseException:
            os.write(w, ("SETUP FAILED\n" + traceback.format_exc()).encode())
            os._exit(127)

    out, status = _fork(child, timeout)
    return out.decode(errors="replace"), status


def status_of(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def self_status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return status_of(f.read())


def caps_of(fields: dict[str, str]) -> dict[str, int]:
    return {k: int(fields[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


# -- raw syscalls, to probe the filter -----------------------------------------------------------


def nr(name: str) -> int:
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert number >= 0, name
    return int(number)


def syscall(number: int, *args: int | bytes) -> tuple[int, int]:
    """(return value, errno) of a raw syscall."""
    fn = _libc.libc().syscall
    fn.restype = ctypes.c_long
    ctypes.set_errno(0)
    conv = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args]
    ret = fn(ctypes.c_long(number), *conv)
    return int(ret), ctypes.get_errno()


def errno_of(number: int, *args: int | bytes) -> int:
    ret, err = syscall(number, *args)
    return err if ret == -1 else 0


def i386_syscall(number: int, arg1: int = 0) -> int:
    """A syscall through the 32-bit entry (int 0x80): the kernel and seccomp see AUDIT_ARCH_I386.

    Returns the raw result (-errno on failure).
    """
    code = bytes.fromhex(
        "53"  # push rbx (callee-saved)
        + "b8" + number.to_bytes(4, "little").hex()  # mov eax, number
        + "bb" + arg1.to_bytes(4, "little").hex()  # mov ebx, arg1
        + "31c9" + "31d2"  # xor ecx, ecx; xor edx, edx
        + "cd80"  # int 0x80
        + "5b" + "c3"  # pop rbx; ret
    )  # fmt: skip
    buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    return int(ctypes.CFUNCTYPE(ctypes.c_int)(address)())


# -- resolve_caps --------------------------------------------------------------------------------


def test_default_caps_are_podmans() -> None:
    assert security.resolve_caps([], []) == security.DEFAULT_CAPS
    # CapEff of `podman run --runtime runc` (4.3) on the same busybox rootfs
    assert security.cap_mask(security.DEFAULT_CAPS) == 0x800405FB
    assert not {"CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE"} & security.DEFAULT_CAPS
    assert set(security.CAP_NAMES) >= security.DEFAULT_CAPS


def test_resolve_caps_add_and_drop_any_spelling() -> None:
    caps = security.resolve_caps(
        ["net_admin", "CAP_SYS_PTRACE", " Sys_Time "], ["chown", "Cap_Kill"]
    )
    assert caps == (security.DEFAULT_CAPS - {"CAP_CHOWN", "CAP_KILL"}) | {
        "CAP_NET_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SYS_TIME",
    }
    # As in docker, an added capability wins over the same one dropped.
    assert "CAP_CHOWN" in security.resolve_caps(["CHOWN"], ["CHOWN"])


def test_resolve_caps_all() -> None:
    everything = frozenset(security.CAP_NAMES)
    assert security.resolve_caps(["ALL"], []) == everything
    assert security.resolve_caps(["all"], ["NET_RAW"]) == everything - {"CAP_NET_RAW"}
    assert security.resolve_caps([], ["ALL"]) == frozenset()
    assert security.resolve_caps(["NET_BIND_SERVICE"], ["all"]) == {"CAP_NET_BIND_SERVICE"}
    assert security.resolve_caps(["ALL"], ["ALL"]) == everything  # docker: add ALL is checked first


@pytest.mark.parametrize(
    ("add", "drop", "bad", "hint"),
    [
        (["NET_ADMN"], [], "NET_ADMN", "did you mean NET_ADMIN?"),
        ([], ["CAP_FOO"], "CAP_FOO", "capabilities(7)"),
        ([""], [], "", "capabilities(7)"),
        (["CHOWN", "bogus"], [], "bogus", "capabilities(7)"),
    ],
)
def test_resolve_caps_unknown_name(add: list[str], drop: list[str], bad: str, hint: str) -> None:
    with pytest.raises(UsageError) as info:
        security.resolve_caps(add, drop)
    message = str(info.value)
    assert "\n" not in message
    assert f"unknown capability {bad!r}" in message
    assert hint in message
    assert isinstance(info.value, TophanError) and info.value.rc == 2


# -- capabilities and no_new_privs ---------------------------------------------------------------

CUSTOM_CAPS = security.resolve_caps(["NET_ADMIN", "SYS_PTRACE"], ["CHOWN", "MKNOD"])


@pytest.mark.parametrize("keep", [security.DEFAULT_CAPS, CUSTOM_CAPS], ids=["default", "custom"])
def test_root_keeps_exactly_the_set(keep: frozenset[str]) -> None:
    def child() -> dict[str, int]:
        security.drop_bounding(keep)
        security.set_caps(keep, 0)
        return caps_of(self_status())

    caps = in_child(child)
    mask = security.cap_mask(keep)
    assert caps["CapBnd"] == mask
    assert caps["CapEff"] == mask
    assert caps["CapPrm"] == mask
    assert caps["CapInh"] == 0
    assert caps["CapAmb"] == 0
    assert security.bounding_caps() != keep  # the test process itself kept its own


def test_root_keeps_the_set_across_exec() -> None:
    def setup() -> None:
        security.drop_bounding(CUSTOM_CAPS)
        security.set_caps(CUSTOM_CAPS, 0)

    out, status = exec_in_child(setup, [BUSYBOX, "cat", "/proc/self/status"])
    assert status == 0, out
    caps = caps_of(status_of(out))
    mask = security.cap_mask(CUSTOM_CAPS)
    assert (caps["CapBnd"], caps["CapPrm"], caps["CapEff"]) == (mask, mask, mask)
    assert caps["CapInh"] == 0


def test_capabilities_the_runtime_lacks_are_left_out() -> None:
    held = caps_of(self_status())["CapPrm"]
    missing = [c for c in security.CAP_NAMES if not held >> security.CAP_NAMES.index(c) & 1]
    keep = security.DEFAULT_CAPS | frozenset(missing[:1])

    def child() -> int:
        security.set_caps(keep, 0)
        return caps_of(self_status())["CapEff"]

    assert in_child(child) == security.cap_mask(keep) & held


def test_non_root_has_no_capabilities_after_exec() -> None:
    def setup() -> None:
        security.drop_bounding(security.DEFAULT_CAPS)
        _libc.prctl(_libc.PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        security.set_caps(security.DEFAULT_CAPS, 65534)

    out, status = exec_in_child(setup, [BUSYBOX, "cat", "/proc/self/status"])
    assert status == 0, out
    fields = status_of(out)
    assert fields["Uid"].split() == ["65534"] * 4
    caps = caps_of(fields)
    assert caps["CapEff"] == 0
    assert caps["CapPrm"] == 0
    assert caps["CapInh"] == 0
    assert caps["CapAmb"] == 0
    assert caps["CapBnd"] == security.cap_mask(security.DEFAULT_CAPS)


def test_drop_bounding_needs_privilege() -> None:
    def child() -> str:
        security.set_caps(frozenset(), 0)  # no CAP_SETPCAP left
        try:
            security.drop_bounding(security.DEFAULT_CAPS)
        except TophanError as e:
            return str(e)
        return "no error"

    message = in_child(child)
    assert "cannot drop CAP_" in message and "CAP_SETPCAP" in message


def test_no_new_privs() -> None:
    def child() -> tuple[str, str]:
        before = self_status()["NoNewPrivs"]
        security.set_no_new_privs()
        return before, self_status()["NoNewPrivs"]

    assert in_child(child) == ["0", "1"]

    out, status = exec_in_child(security.set_no_new_privs, [BUSYBOX, "cat", "/proc/self/status"])
    assert status == 0, out
    assert status_of(out)["NoNewPrivs"] == "1"  # inherited across exec, as it must be


# -- seccomp -------------------------------------------------------------------------------------

AT_FDCWD = -100
CLONE_NEWUSER = 0x10000000
PER_BSD = 0x0006


def harden(caps: frozenset[str] = security.DEFAULT_CAPS) -> None:
    """What the runtime does as root, in its order."""
    security.drop_bounding(caps)
    security.set_caps(caps, 0)
    security.set_no_new_privs()
    security.load_seccomp("default")


def _probe_blocked() -> dict[str, int]:
    """errno of syscalls moby's profile refuses; all harmless if let through (bad arguments)."""
    r = {
        "keyctl": errno_of(nr("keyctl"), 0, 0),  # KEYCTL_GET_KEYRING_ID
        "add_key": errno_of(nr("add_key"), 0, 0, 0, 0, 0),
        "request_key": errno_of(nr("request_key"), 0, 0, 0, 0),
        "kexec_load": errno_of(nr("kexec_load"), 0, 1 << 20, 0, 0),  # too many segments
        "reboot": errno_of(nr("reboot"), 0, 0, 0, 0),  # wrong magic
        "mount": errno_of(nr("mount"), b"none", b"/nonexistent", b"tmpfs", 0, 0),
        "personality(PER_BSD)": errno_of(nr("personality"), PER_BSD),
    }
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
        r["socket(AF_VSOCK)"] = 0
    except OSError as e:
        r["socket(AF_VSOCK)"] = e.errno or -1
    ret, err = syscall(nr("clone"), CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
    if ret == 0:  # let through: this is the new process, which must not run the test
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
    r["clone(CLONE_NEWUSER)"] = err if ret == -1 else 0
    r["unshare(CLONE_NEWUSER)"] = errno_of(nr("unshare"), CLONE_NEWUSER)  # last: it sticks
    return r


def _probe_allowed() -> dict[str, Any]:
    r: dict[str, Any] = {
        "Seccomp": self_status()["Seccomp"],
        "getpid": syscall(nr("getpid"))[0] == os.getpid(),
        "personality(query)": errno_of(nr("personality"), 0xFFFFFFFF),
        "clone3": errno_of(nr("clone3"), 0, 0),
        "fchmodat2": errno_of(nr("fchmodat2"), AT_FDCWD, b"/nonexistent", 0o644, 0),
    }
    if os.uname().machine == "x86_64":
        r["statmount"] = errno_of(457, 0, 0, 0, 0)  # newer than libseccomp 2.5.4's table
    return r


def test_default_filter_blocks_what_docker_blocks() -> None:
    """The filter alone refuses them: the child keeps every capability the kernel would check."""

    def filtered() -> dict[str, Any]:
        security.set_no_new_privs()
        security.load_seccomp("default", caps=security.DEFAULT_CAPS)
        return {**_probe_allowed(), **_probe_blocked()}

    baseline = in_child(_probe_blocked)
    r = in_child(filtered)
    assert r.pop("Seccomp") == "2"
    assert r.pop("getpid") is True
    assert r.pop("personality(query)") == 0
    # clone3 passes its flags in memory: ENOSYS, so glibc falls back to clone (filtered).
    assert r.pop("clone3") == errno.ENOSYS
    # Newer than the profile: ENOSYS too, so a libc falls back (runc's behaviour).
    assert r.pop("fchmodat2") == errno.ENOSYS
    assert r.pop("statmount", errno.ENOSYS) == errno.ENOSYS
    assert r == dict.fromkeys(baseline, errno.EPERM)
    # Without the filter the kernel answers otherwise: EPERM above is the filter's.
    assert not [k for k, v in baseline.items() if v == errno.EPERM], baseline


def test_ordinary_programs_work_under_the_filter() -> None:
    def child() -> dict[str, Any]:
        harden()
        r: dict[str, Any] = {}
        box: list[int] = []
        t = threading.Thread(target=lambda: box.append(os.getpid()))  # clone3 -> clone fallback
        t.start()
        t.join()
        r["thread"] = box == [os.getpid()]
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        r["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        p = subprocess.run([BUSYBOX, "echo", "spawned"], capture_output=True, timeout=10)
        r["subprocess"] = p.stdout.decode().strip()
        with (
            socket.create_server(("127.0.0.1", 0)) as srv,
            socket.create_connection(srv.getsockname(), timeout=5) as c,
        ):
            conn, _ = srv.accept()
            c.sendall(b"ping")
            r["tcp"] = conn.recv(4).decode()
            conn.close()
        r["listdir"] = "status" in os.listdir("/proc/self")
        return r

    assert in_child(child) == {
        "thread": True,
        "fork": 7,
        "subprocess": "spawned",
        "tcp": "ping",
        "listdir": True,
    }


def test_busybox_runs_under_the_filter() -> None:
    script = "echo hello; ls / >/dev/null && grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"
    out, status = exec_in_child(harden, [BUSYBOX, "sh", "-c", script])
    assert status == 0, out
    lines = out.split()
    assert lines[0] == "hello"
    assert status_of(out)["Seccomp"] == "2"
    assert status_of(out)["NoNewPrivs"] == "1"


def test_python_runs_under_the_filter() -> None:
    code = (
        "import json, threading, subprocess, hashlib;"
        "t = threading.Thread(target=print); t.start(); t.join();"
        f"subprocess.run([{BUSYBOX!r}, 'true'], check=True);"
        "print(json.dumps(hashlib.sha256(b'x').hexdigest()[:8]))"
    )
    out, status = exec_in_child(harden, [sys.executable, "-I", "-c", code])
    assert status == 0, out
    assert out.split()[-1] == '"2d711642"'


def test_busybox_httpd_serves_under_the_filter(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www/index.html").write_text("hello from httpd\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # httpd stays in the child's process group: _reap kills it whatever happens.
    script = (
        f"{BUSYBOX} httpd -f -p 127.0.0.1:{port} -h {tmp_path / 'www'} & "
        f"for i in $(seq 50); do "
        f"  {BUSYBOX} wget -q -O - http://127.0.0.1:{port}/index.html && break; sleep 0.1; "
        f"done; kill $!"
    )
    out, _ = exec_in_child(harden, [BUSYBOX, "sh", "-c", script])
    assert "hello from httpd" in out, out


def test_capabilities_open_conditional_syscalls() -> None:
    """Like moby, the filter follows the bounding set: CAP_SYS_ADMIN allows mount & co."""

    def child(caps: frozenset[str], explicit: bool) -> dict[str, int]:
        if not explicit:
            security.drop_bounding(caps)  # what load_seccomp reads by default
        security.set_no_new_privs()
        security.load_seccomp("default", caps=caps if explicit else None)
        pid = os.getpid()
        return {
            "unshare(NEWNS)": errno_of(nr("unshare"), _libc.CLONE_NEWNS),
            "clone3": errno_of(nr("clone3"), 0, 0),  # NULL args: EFAULT/EINVAL once let through
            "reboot": errno_of(nr("reboot"), 0, 0, 0, 0),  # wrong magic: EINVAL once through
            "kcmp": errno_of(nr("kcmp"), pid, pid, 0, 0, 0),  # KCMP_FILE of fd 0 with itself
        }

    admin = security.DEFAULT_CAPS | {"CAP_SYS_ADMIN"}
    for explicit in (False, True):
        r = in_child(functools.partial(child, admin, explicit))
        assert r["unshare(NEWNS)"] == 0
        assert r["clone3"] not in (0, errno.ENOSYS, errno.EPERM)
        assert r["reboot"] == errno.EPERM  # no CAP_SYS_BOOT
        assert r["kcmp"] == errno.EPERM  # no CAP_SYS_PTRACE
    r = in_child(lambda: child(security.DEFAULT_CAPS | {"CAP_SYS_BOOT", "CAP_SYS_PTRACE"}, False))
    assert r["unshare(NEWNS)"] == errno.EPERM
    assert r["clone3"] == errno.ENOSYS
    assert r["reboot"] == errno.EINVAL
    assert r["kcmp"] == 0


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64's 32-bit and x32 entries")
def test_x86_and_x32_syscalls_are_filtered_too() -> None:
    def probe() -> dict[str, int]:
        return {
            "i386 getpid": i386_syscall(pyseccomp.resolve_syscall(pyseccomp.Arch.X86, "getpid")),
            "i386 keyctl": i386_syscall(pyseccomp.resolve_syscall(pyseccomp.Arch.X86, "keyctl")),
            "x32 keyctl": errno_of(0x40000000 | nr("keyctl"), 0, 0),
        }

    plain = in_child(probe)
    if plain["i386 getpid"] <= 0:
        pytest.skip("this kernel runs no 32-bit code (no IA32 emulation)")
    assert plain["i386 keyctl"] != -errno.EPERM and plain["x32 keyctl"] != errno.EPERM

    def filtered() -> dict[str, int]:
        harden()
        return probe()

    # Without the x86 and x32 sections these would kill the child (a bad architecture).
    r = in_child(filtered)
    assert r["i386 getpid"] > 0
    assert r["i386 keyctl"] == -errno.EPERM
    assert r["x32 keyctl"] == errno.EPERM


@pytest.mark.parametrize("profile", [None, "unconfined"])
def test_seccomp_off(profile: str | None) -> None:
    def child() -> dict[str, Any]:
        security.drop_bounding(security.DEFAULT_CAPS)
        security.set_no_new_privs()
        security.load_seccomp(profile)
        return {"Seccomp": self_status()["Seccomp"], "clone3": errno_of(nr("clone3"), 0, 0)}

    r = in_child(child)
    assert r["Seccomp"] == "0"
    assert r["clone3"] != errno.ENOSYS


def test_unknown_profile() -> None:
    with pytest.raises(UsageError, match="unknown seccomp profile 'strict'"):
        security.load_seccomp("strict")


def test_loading_without_no_new_privs_or_sys_admin_explains() -> None:
    def child() -> str:
        security.drop_bounding(security.DEFAULT_CAPS)
        security.set_caps(security.DEFAULT_CAPS, 0)
        try:
            security.load_seccomp("default")
        except TophanError as e:
            return str(e)
        return "loaded"

    message = in_child(child)
    assert message.startswith("cannot load the seccomp filter: Permission denied")
    assert "no_new_privs" in message


def test_filter_follows_the_profile_conditions() -> None:
    """The rule table itself: what applies where, without loading anything."""
    rules = security._moby_rules()

    def allowed(caps: frozenset[str], arch: str = "amd64") -> set[str]:
        return {
            name
            for rule in rules
            if rule.fail_errno is None and rule.applies(caps, arch, (6, 1))
            for name in rule.names
        }

    default = allowed(security.DEFAULT_CAPS)
    assert {"read", "execve", "clone", "socket", "arch_prctl", "modify_ldt"} <= default
    blocked = {"mount", "unshare", "setns", "keyctl", "add_key", "bpf", "kcmp", "reboot"}
    assert not blocked & default
    assert {"mount", "unshare", "setns", "bpf"} <= allowed(
        security.DEFAULT_CAPS | {"CAP_SYS_ADMIN"}
    )
    assert "arch_prctl" not in allowed(security.DEFAULT_CAPS, "arm64")
    assert "cacheflush" in allowed(security.DEFAULT_CAPS, "arm64")
    assert "ptrace" in default  # on kernels from 4.8, where seccomp cannot be bypassed with it
    old_kernel = {
        n for r in rules if r.applies(security.DEFAULT_CAPS, "amd64", (4, 4)) for n in r.names
    }
    assert "ptrace" not in old_kernel


# -- masked and read-only paths ------------------------------------------------------------------


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


def _write_error(path: str) -> int:
    """The errno of opening ``path`` for writing (0 if it opened; nothing is written)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno or -1
    os.close(fd)
    return 0


def _observe(root: str) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for path in security.MASKED_PATHS:
        p = os.path.join(root, path.lstrip("/"))
        if os.path.isdir(p):
            r[path] = {"entries": os.listdir(p), "create": _create_error(p)}
        elif os.path.exists(p):
            with open(p, "rb") as f:
                r[path] = {"content": f.read().decode(), "rdev": os.stat(p).st_rdev}
    for path in ("/proc/sys/kernel/hostname", "/proc/sys/vm/overcommit_memory"):
        p = os.path.join(root, path.lstrip("/"))
        with open(p) as f:
            r[path] = {"readable": bool(f.read()), "write": _write_error(p)}
    sysrq = os.path.join(root, "proc/sysrq-trigger")
    if os.path.exists(sysrq):  # a kernel without CONFIG_MAGIC_SYSRQ has none
        r["/proc/sysrq-trigger"] = {"write": _write_error(sysrq)}
    return r


def _create_error(directory: str) -> int:
    try:
        os.close(os.open(os.path.join(directory, "x"), os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as e:
        return e.errno or -1
    return 0


def _private_mount_namespace() -> None:
    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount("none", "/", None, _libc.MS_REC | _libc.MS_PRIVATE, None)


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-proc", "host-proc"])
def test_mask_paths(tmp_path: Path, fresh: bool) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "sys").mkdir()
    host_mounts = _mount_points()

    def child() -> dict[str, Any]:
        _private_mount_namespace()
        if fresh:  # the container's case: a new procfs and a read-only sysfs
            nodev = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
            _libc.mount("proc", str(root / "proc"), "proc", nodev, None)
            _libc.mount("sysfs", str(root / "sys"), "sysfs", nodev | _libc.MS_RDONLY, None)
            security.mask_paths(str(root))
            return _observe(str(root))
        security.mask_paths()
        return _observe("/")

    r = in_child(child)
    null = os.stat("/dev/null").st_rdev
    files = [p for p, v in r.items() if p in security.MASKED_PATHS and "content" in v]
    dirs = [p for p, v in r.items() if p in security.MASKED_PATHS and "entries" in v]
    assert "/proc/timer_list" in files and "/sys/firmware" in dirs  # present on any x86 kernel
    for path in files:
        assert r[path] == {"content": "", "rdev": null}, path
    for path in dirs:
        assert r[path] == {"entries": [], "create": errno.EROFS}, path
    for path in ("/proc/sys/kernel/hostname", "/proc/sys/vm/overcommit_memory"):
        assert r[path] == {"readable": True, "write": errno.EROFS}, path
    assert r.get("/proc/sysrq-trigger", {"write": errno.EROFS}) == {"write": errno.EROFS}
    # The host saw none of it.
    assert _mount_points() == host_mounts
    with open("/proc/timer_list") as f:
        assert f.read(100)
    assert _write_error("/proc/sys/vm/overcommit_memory") == 0
    assert os.listdir(root / "proc") == []


def test_mask_paths_skips_what_is_missing(tmp_path: Path) -> None:
    """A root without /proc or /sys: every path is missing, nothing is mounted, no error."""

    def child() -> int:
        _private_mount_namespace()
        before = len(_mount_points())
        security.mask_paths(str(tmp_path))
        return len(_mount_points()) - before

    assert in_child(child) == 0
    assert os.listdir(tmp_path) == []
