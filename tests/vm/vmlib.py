"""Run a command in a throwaway qemu VM with a stock Debian kernel and pure cgroup v2.

See docs/testing-v2.md. Standard library only: this runs with any Python 3.9+, not only the
project's venv. Layout of the cache (``cache_dir()``)::

    kernels/<uname -r>/vmlinuz            from linux-image-<uname -r> (apt-get download)
    kernels/<uname -r>/lib/modules/...    the package's modules + busybox depmod output
    kernels/<uname -r>/ok                 written last: the unpack is complete
    current                               the <uname -r> in use
    initramfs/<uname -r>.cpio (+ .key)    busybox + the modules to reach the root, + init

The guest sees the host's / read-only (virtio-9p) under a tmpfs overlay, so every path (the
repo, its venv, the pyenv Python) is the same as on the host and nothing the guest writes
reaches the host, except through the per-run share directory (config, command, exit code).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import gzip
import hashlib
import lzma
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INIT_SCRIPT = HERE / "guest-init.sh"
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
# What the initramfs must load to mount the root; everything else is modprobed from the full
# module tree once the guest runs on its real root.
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
BUILD_VERSION = "1"  # bump when the initramfs layout changes
KERNEL_CMDLINE = (
    "console=ttyS0 quiet panic=-1 rdinit=/init cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
)
PASS_ENV_PREFIXES = ("LC_", "TOPHAN_", "PYTEST_", "PYTHON", "HYPOTHESIS_")
PASS_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "HOME", "USER", "LOGNAME")
TMP_PREFIX = "tophan-vm-"
TCG_CPU = "qemu64"  # plain x86-64: the fastest to emulate
EXIT_TIMEOUT = 124
EXIT_VM_FAILED = 125
STAGE1_MARK = b"tophan-vm: stage1"
RUNNING_MARK = b"tophan-vm: running command"
KVM_BOOT_SECONDS = 30  # a working KVM runs the init in 1-3 s; TCG takes ~8 s


class VMError(Exception):
    pass


def log(msg: str) -> None:
    print(f"tophan-vm: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    env = os.environ.get("TOPHAN_VM_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/tophan-vm")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tophan-vm"


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- kernel ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    version: str  # uname -r
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def _cached_kernel(cache: Path) -> Kernel | None:
    try:
        version = (cache / "current").read_text().strip()
    except FileNotFoundError:
        return None
    k = Kernel(version, cache / "kernels" / version)
    return k if version and (k.root / "ok").exists() else None


def _apt_depends(pkg: str) -> list[str]:
    p = subprocess.run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", pkg],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return []
    deps = []
    for line in p.stdout.splitlines():
        key, _, val = line.strip().partition(": ")
        if key in ("Depends", "|Depends") and val.startswith("linux-image-"):
            deps.append(val.strip("<>"))
    return deps


def _resolve_kernel_package() -> str:
    """``linux-image-6.1.0-N-amd64``: the package that the metapackage currently points to."""
    pkg = os.environ.get("TOPHAN_VM_KERNEL_PACKAGE", "linux-image-amd64")
    if pkg[len("linux-image-") :][:1].isdigit():
        return pkg
    for attempt in range(2):
        deps = [d for d in _apt_depends(pkg) if d[len("linux-image-") :][:1].isdigit()]
        if deps:
            return deps[0]
        if attempt == 0 and os.geteuid() == 0:
            log(f"apt-cache does not know {pkg}: running apt-get update")
            subprocess.run(["apt-get", "update", "-q"], check=False, stdout=sys.stderr)
    raise VMError(f"cannot resolve {pkg} to a kernel package with apt-cache")


def fetch_kernel(cache: Path, refresh: bool = False) -> Kernel:
    """The cached kernel, or download and unpack the current stock Debian one."""
    with _locked(cache):
        k = _cached_kernel(cache)
        if k is not None and not refresh:
            return k
        pkg = _resolve_kernel_package()
        kernels = cache / "kernels"
        kernels.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=kernels))
        try:
            log(f"downloading {pkg} into {kernels}")
            apt = ["apt-get", "download", "-q"]
            if os.geteuid() == 0:
                apt += ["-o", "APT::Sandbox::User=root"]
            subprocess.run([*apt, pkg], cwd=tmp, check=True, stdout=sys.stderr)
            debs = sorted(tmp.glob("*.deb"))
            if len(debs) != 1:
                raise VMError(f"apt-get download {pkg}: expected one .deb, got {debs}")
            x = tmp / "x"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(x)], check=True)
            modroot = next(
                (d for d in (x / "lib" / "modules", x / "usr" / "lib" / "modules") if d.is_dir()),
                None,
            )
            if modroot is None:
                raise VMError(f"{debs[0].name} has no lib/modules")
            versions = [d.name for d in modroot.iterdir() if d.is_dir()]
            if len(versions) != 1:
                raise VMError(f"{debs[0].name}: expected one module tree, got {versions}")
            version = versions[0]
            vmlinuz = x / "boot" / f"vmlinuz-{version}"
            if not vmlinuz.is_file():
                raise VMError(f"{debs[0].name} has no boot/vmlinuz-{version}")
            new = tmp / "k"
            (new / "lib" / "modules").mkdir(parents=True)
            os.rename(vmlinuz, new / "vmlinuz")
            os.rename(modroot / version, new / "lib" / "modules" / version)
            subprocess.run(
                [str(BUSYBOX), "depmod", "-b", str(new), version], check=True, stdout=sys.stderr
            )
            deb_version = subprocess.run(
                ["dpkg-deb", "-f", str(debs[0]), "Version"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            (new / "ok").write_text(f"{pkg} {deb_version}\n")
            final = kernels / version
            if final.exists():
                shutil.rmtree(final)
            os.rename(new, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _write_atomic(cache / "current", f"{version}\n".encode())
        log(f"kernel {version} ({pkg} {deb_version}) cached in {final}")
        return Kernel(version, final)


# --- initramfs -------------------------------------------------------------------------------


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def _modules_in_order(moddir: Path, wanted: Sequence[str]) -> list[str]:
    """Paths (relative to moddir) of ``wanted`` and their dependencies, dependencies first."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[_module_name(path)] = (path, rest.split())
    builtin = set()
    if (moddir / "modules.builtin").exists():
        builtin = {_module_name(p) for p in (moddir / "modules.builtin").read_text().split()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in deps:
            if name in builtin:
                return
            raise VMError(f"module {name} is neither in modules.dep nor built in")
        path, ds = deps[name]
        for d in ds:
            visit(_module_name(d))
        order.append(path)

    for w in wanted:
        visit(w.replace("-", "_"))
    return order


def _read_module(path: Path) -> bytes:
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".zst"):
        return subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=True).stdout
    return path.read_bytes()


class _Cpio:
    """A newc ("070701") archive, as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def _pad(self) -> None:
        n = sum(len(p) for p in self.parts)
        self.parts.append(b"\0" * (-n % 4))

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nameb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0]
        self.ino += 1
        self.parts.append(b"070701" + b"".join(b"%08x" % f for f in fields) + nameb)
        self._pad()
        self.parts.append(data)
        self._pad()

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


def build_initramfs(cache: Path, kernel: Kernel) -> Path:
    """The initramfs for ``kernel``; rebuilt when the init script, busybox or modules change."""
    mods = _modules_in_order(kernel.moddir, INITRAMFS_MODULES)
    init = INIT_SCRIPT.read_bytes()
    busybox = BUSYBOX.read_bytes()
    h = hashlib.sha256()
    for part in (
        BUILD_VERSION.encode(),
        init,
        busybox,
        kernel.version.encode(),
        *map(str.encode, mods),
    ):
        h.update(hashlib.sha256(part).digest())
    key = h.hexdigest()
    outdir = cache / "initramfs"
    out = outdir / f"{kernel.version}.cpio"
    keyfile = outdir / f"{kernel.version}.key"
    with _locked(cache):
        if out.exists() and keyfile.exists() and keyfile.read_text().strip() == key:
            return out
        outdir.mkdir(parents=True, exist_ok=True)
        a = _Cpio()
        for d in ("bin", "dev", "modules"):
            a.add(d, 0o040755)
        a.add("dev/console", 0o020600, rdev=(5, 1))
        a.add("bin/busybox", 0o100755, busybox)
        a.add("init", 0o100755, init)
        names = []
        for m in mods:
            base = _module_name(m) + ".ko"
            a.add(f"modules/{base}", 0o100644, _read_module(kernel.moddir / m))
            names.append(base)
        a.add("modules/order", 0o100644, "".join(f"{n}\n" for n in names).encode())
        _write_atomic(out, a.finish())
        _write_atomic(keyfile, f"{key}\n".encode())
        return out


# --- qemu ------------------------------------------------------------------------------------


def kvm_usable() -> bool:
    """Whether /dev/kvm opens, speaks API 12 and creates a VM (it can exist and not work)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, 0xAE00) != 12:  # KVM_GET_API_VERSION
            return False
        os.close(fcntl.ioctl(fd, 0xAE01, 0))  # KVM_CREATE_VM
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _pdeathsig() -> None:
    # PR_SET_PDEATHSIG: qemu dies with us even if we are SIGKILLed.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _guest_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOME", "/root")
    if (os.isatty(1) or os.isatty(2)) and "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(extra)
    return env


def _command_script(argv: Sequence[str], cwd: Path, env: dict[str, str], cgroup: str) -> str:
    lines = ["# generated by tests/vm/vmlib.py"]
    if cgroup:
        lines.append(f"echo $$ >{shlex.quote(f'/sys/fs/cgroup/{cgroup}/cgroup.procs')} || exit 125")
    lines += _winsize_lines()
    lines.append(f"cd -- {shlex.quote(str(cwd))} || exit 125")
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    lines.append(f"exec /usr/bin/env -i -- {assigns} {' '.join(shlex.quote(a) for a in argv)}")
    return "\n".join(lines) + "\n"


class _Console:
    """Copies the guest's kernel console to a log (and stderr) and notes the init's marks."""

    def __init__(self, log_path: Path, echo: bool) -> None:
        self.log_path = log_path
        self.echo = echo
        self.booted = threading.Event()  # the init script runs (stage 1)
        self.running = threading.Event()  # the command starts (stage 2)

    def pump(self, src: int) -> None:
        with open(src, "rb", buffering=0) as f, open(self.log_path, "ab") as out:
            tail = b""
            while chunk := f.read(65536):
                out.write(chunk)
                out.flush()
                if self.echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.buffer.flush()
                seen = tail + chunk
                if STAGE1_MARK in seen:
                    self.booted.set()
                if RUNNING_MARK in seen:
                    self.running.set()
                tail = seen[-64:]

    def tail(self, n: int = 40) -> list[str]:
        try:
            text = self.log_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return []
        return [line.rstrip("\r") for line in text.splitlines()[-n:]]


def _pump(src: int, sink: IO[bytes]) -> None:
    with open(src, "rb", buffering=0) as f:
        while chunk := f.read(65536):
            sink.write(chunk)
            sink.flush()


@dataclass
class Options:
    timeout: float = 1800.0
    mem_mib: int = 2048
    cpus: int = 2
    accel: str = "auto"  # auto | kvm | tcg
    cwd: Path = REPO
    env: dict[str, str] | None = None
    cgroup: str = ""  # run the command in this child cgroup of the root (created)
    verbose: int = 0  # 1: timing summary; 2: also the kernel console on stderr
    refresh_kernel: bool = False


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _accels(opts: Options, cache: Path) -> list[str]:
    """Accelerators to try in order: KVM only where it can run a stock kernel."""
    if opts.accel != "auto":
        return [opts.accel]
    if not kvm_usable():
        return ["tcg"]
    if Path("/sys/module/kvm_pvm").exists():
        # A PVM host (KVM on top of another hypervisor, without VMX): /dev/kvm works but runs
        # only PVM-enabled guest kernels; a stock kernel's decompressor crawls for minutes.
        return ["tcg"]
    try:
        if (cache / "kvm-broken").read_text().strip() == _boot_id():
            return ["tcg"]
    except FileNotFoundError:
        pass
    return ["kvm", "tcg"]


class _BootTimeout(Exception):
    pass


def _qemu_once(
    accel: str,
    kernel: Kernel,
    initrd: Path,
    share: Path,
    console: _Console,
    opts: Options,
    deadline: float,
    boot_deadline: float | None,
) -> int | None:
    """One qemu run: its exit code (None: timed out; _BootTimeout: no init by boot_deadline)."""
    if accel == "kvm":
        machine = ["-accel", "kvm", "-cpu", "host"]
    else:
        # Not "max": its AVX/SHA/AES are emulated instruction by instruction, and libraries
        # that pick them (OpenSSL, glibc's string functions) get slower than with plain SSE.
        machine = ["-accel", "tcg,thread=multi", "-cpu", os.environ.get("TOPHAN_VM_CPU", TCG_CPU)]
    pipes = [os.pipe() for _ in range(3)]  # console, stdout, stderr
    chardevs: list[str] = []
    for i, (_, w) in enumerate(pipes):
        chardevs += ["-chardev", f"file,id=s{i},path=/proc/self/fd/{w}", "-serial", f"chardev:s{i}"]
    cmd = [
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-machine", "q35",
        *machine,
        "-smp", str(opts.cpus),
        "-m", str(opts.mem_mib),
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initrd),
        "-append", KERNEL_CMDLINE,
        *chardevs,
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=share,path={share},security_model=none",
        "-device", "virtio-9p-pci,fsdev=share,mount_tag=share",
    ]  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    threads = []
    try:
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[w for _, w in pipes],
                start_new_session=True,
                preexec_fn=_pdeathsig,
            )
        finally:
            for _, w in pipes:
                os.close(w)
        targets: list[tuple[Callable[[int], None], int]] = [
            (console.pump, pipes[0][0]),
            (functools.partial(_pump, sink=sys.stdout.buffer), pipes[1][0]),
            (functools.partial(_pump, sink=sys.stderr.buffer), pipes[2][0]),
        ]
        for fn, fd in targets:
            t = threading.Thread(target=fn, args=(fd,), daemon=True)
            t.start()
            threads.append(t)
        if boot_deadline is not None:
            while not console.booted.wait(0.1) and proc.poll() is None:
                if time.monotonic() > boot_deadline:
                    raise _BootTimeout
        try:
            return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for t in threads:
            t.join(timeout=10)


def _stdio_config() -> str:
    """How the guest wires the command's stdout/stderr: like the caller's (tty or not, merged)."""
    out_tty, err_tty = os.isatty(1), os.isatty(2)
    try:
        s1, s2 = os.fstat(1), os.fstat(2)
        merge = (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino)
    except OSError:
        merge = False
    conf = f"TVM_OUT_TTY={int(out_tty)}\nTVM_ERR_TTY={int(err_tty)}\nTVM_MERGE={int(merge)}\n"
    return conf


def _winsize_lines() -> list[str]:
    """cmd.sh lines that give the guest's tty stdout/stderr the caller's terminal size."""
    lines = []
    for fd in (1, 2):
        try:
            cols, rows = os.get_terminal_size(fd)
        except OSError:
            continue
        # While the command holds the tty open: the size lives only as long as an open file.
        lines.append(f"[ -t {fd} ] && stty -F /proc/self/fd/{fd} cols {cols} rows {rows}")
    return lines


def _sweep_stale_tmp() -> None:
    """Remove the per-run directories of runs that were SIGKILLed (their pid is gone)."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = d.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


def run(argv: Sequence[str], opts: Options) -> int:
    """Run ``argv`` in the VM; its exit code, 124 on timeout, 125 if the VM itself failed."""
    if not argv:
        raise VMError("no command")
    if shutil.which(QEMU) is None:
        raise VMError(f"{QEMU} not found (apt-get install qemu-system-x86)")
    cache = cache_dir()
    kernel = fetch_kernel(cache, opts.refresh_kernel)
    initrd = build_initramfs(cache, kernel)
    accels = _accels(opts, cache)

    _sweep_stale_tmp()
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    try:
        share = tmp / "share"
        share.mkdir()
        config = _stdio_config()
        config += f"TVM_MODDIR={shlex.quote(str(kernel.moddir))}\n"
        config += f"TVM_CGROUP={shlex.quote(opts.cgroup)}\n"
        # The guest's /tmp is a fresh tmpfs (overlay upper dirs cannot live on its overlay root);
        # a repo (and its venv) under /tmp, as a CI checkout may be, is carried over into it.
        keep = str(opts.cwd) if str(opts.cwd).startswith("/tmp/") else ""
        config += f"TVM_KEEP={shlex.quote(keep)}\n"
        (share / "config").write_text(config)
        (share / "cmd.sh").write_text(
            _command_script(argv, opts.cwd, _guest_env(opts.env or {}), opts.cgroup)
        )
        start = time.monotonic()
        deadline = start + opts.timeout
        for i, accel in enumerate(accels):
            console = _Console(tmp / f"console-{accel}.log", opts.verbose >= 2)
            fallback = i + 1 < len(accels)
            boot_deadline = time.monotonic() + KVM_BOOT_SECONDS if fallback else None
            if opts.verbose:
                threading.Thread(
                    target=_report_boot, args=(console, accel, start, argv[0]), daemon=True
                ).start()
            try:
                qrc = _qemu_once(
                    accel, kernel, initrd, share, console, opts, deadline, boot_deadline
                )
            except _BootTimeout:
                log(f"no boot with {accel} in {KVM_BOOT_SECONDS}s: falling back to {accels[i + 1]}")
                with contextlib.suppress(OSError):
                    _write_atomic(cache / "kvm-broken", f"{_boot_id()}\n".encode())
                continue
            if qrc is None:
                log(f"timed out after {opts.timeout:.0f}s: killed qemu")
                return EXIT_TIMEOUT
            rcfile = share / "rc"
            if rcfile.exists():
                rc = int(rcfile.read_text().strip())
                if opts.verbose:
                    log(f"exit {rc} after {time.monotonic() - start:.1f}s")
                return rc
            log(f"the guest reported no exit code (qemu exited {qrc}); end of its console:")
            for line in console.tail():
                print(f"  | {line}", file=sys.stderr)
            return EXIT_VM_FAILED
        raise VMError("no accelerator booted the guest")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report_boot(console: _Console, accel: str, start: float, what: str) -> None:
    if console.running.wait():
        log(f"guest up ({accel}) in {time.monotonic() - start:.1f}s; running {what}")


# --- command line ----------------------------------------------------------------------------


def _raise_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, *, env: dict[str, str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="run-in-vm",
        description="Run a command in a qemu VM (stock Debian kernel, pure cgroup v2, the host's "
        "/ read-only under a tmpfs overlay) and exit with its exit code.",
    )
    p.add_argument(
        "--timeout", type=float, default=float(os.environ.get("TOPHAN_VM_TIMEOUT", 1800))
    )
    p.add_argument(
        "--mem", type=int, default=int(os.environ.get("TOPHAN_VM_MEM", 2048)), help="MiB"
    )
    p.add_argument("--cpus", type=int, default=int(os.environ.get("TOPHAN_VM_CPUS", 2)))
    p.add_argument(
        "--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("TOPHAN_VM_ACCEL", "auto")
    )
    p.add_argument("--cwd", type=Path, default=REPO, help="default: the repo")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--cgroup", default="", help="run the command in this (new) child cgroup")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--refresh-kernel", action="store_true", help="fetch the current kernel")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    command = list(a.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        p.error("no command given")
    extra = dict(env or {})
    for kv in a.env:
        k, sep, v = kv.partition("=")
        if not sep:
            p.error(f"--env {kv}: expected NAME=VALUE")
        extra[k] = v
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    opts = Options(
        timeout=a.timeout,
        mem_mib=a.mem,
        cpus=a.cpus,
        accel=a.accel,
        cwd=a.cwd.resolve(),
        env=extra,
        cgroup=a.cgroup.strip("/"),
        verbose=a.verbose,
        refresh_kernel=a.refresh_kernel,
    )
    try:
        return run(command, opts)
    except VMError as e:
        log(str(e))
        return EXIT_VM_FAILED
    except subprocess.CalledProcessError as e:
        log(f"{e.cmd[0]} failed with exit code {e.returncode}")
        return EXIT_VM_FAILED
    except KeyboardInterrupt:
        log("interrupted")
        return 130


def test_v2(pytest_args: Sequence[str]) -> int:
    """``make test-v2``: pytest on the v2-relevant test files, in the VM."""
    tests = REPO / "tests"
    files = [
        p
        for p in [
            tests / "test_cgroup.py",
            tests / "test_devices.py",
            *sorted(tests.glob("test_run*.py")),
        ]
        if p.is_file()
    ]
    if not files:
        log("no tests/test_cgroup.py, test_devices.py nor test_run*.py: nothing to run")
        return 5  # pytest's 'no tests collected'
    pytest = REPO / ".venv" / "bin" / "pytest"
    if not pytest.exists():
        log(f"{pytest} missing: run `make venv` first")
        return EXIT_VM_FAILED
    argv = [
        "--",
        str(pytest),
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not rootless",
        *(str(f.relative_to(REPO)) for f in files),
        *pytest_args,
    ]
    return main(["-v", *argv], env={"TOPHAN_TEST_CGROUP_V2": "1"})
