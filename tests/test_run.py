"""`tophan run`: real namespaces, overlay mounts, cgroups and seccomp, as root on this host.

Every test checks, at the end, that nothing is left: no run dir in the store, no mount of the
store in the host's namespace, and no cgroup of ours that was not there before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, busybox_full_rootfs, run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers as root")


def _our_cgroups() -> set[str]:
    from tophan.run import cgroup

    return set(cgroup.list_ours()) if cgroup.unavailable(cgroup.Limits()) is None else set()


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [str(BIN / "tophan"), "--root", str(self.root), "run", *args],
            input=input,
            capture_output=True,
            timeout=120,
            env=env,
        )
        return subprocess.CompletedProcess(
            p.args, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode()
        )

    def sh(self, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
        return self.run(*flags, "-l", "base", "--", "sh", "-c", script)


@pytest.fixture
def stack(root: Path, tmp_path: Path) -> Iterator[Stack]:
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    before = _our_cgroups()
    yield Stack(root)
    assert os.listdir(root / "tmp") == [], "a run dir was left behind"
    with open("/proc/self/mountinfo") as f:
        assert str(root) not in f.read(), "something of the store is still mounted"
    leaked = {c for c in _our_cgroups() - before if c.startswith("run-")}
    assert not leaked, f"cgroups left: {leaked}"


def test_run_options_json_round_trip_and_refusals() -> None:
    from tophan import RunOptions
    from tophan.errors import TophanError, UsageError
    from tophan.run.options import Mount

    opts = RunOptions(image="web", command=["sh", "-c", "true"], env={"A": "1"})
    opts.update(
        {
            "env": ["B=2", "NOT_IN_ENVIRON"],
            "volume": ["data:/data", "/srv:/srv:ro"],
            "memory": "64m",
            "memory_swap": "128m",
            "pids_limit": "-1",
            "ulimit": ["nofile=10:20"],
            "security_opt": ["seccomp=unconfined"],
            "cap_drop": ["chown"],
            "init": True,
            "user": "1000:1000",
        },
        environ={},
    )
    assert opts.env == {"A": "1", "B": "2", "NOT_IN_ENVIRON": None}
    assert opts.volumes == [Mount("data", "/data"), Mount("/srv", "/srv", True)]
    assert opts.limits is not None and opts.limits.memory_swap == 128 << 20
    assert opts.limits.pids is None  # -1: unlimited
    doc = opts.to_json()
    assert doc["version"] == 2 and RunOptions.from_json(doc) == opts
    # Flags add to what is there: the swap needs the memory set before, in another update.
    opts.update({"memory_swap": "256m"})
    assert opts.limits.memory == 64 << 20 and opts.limits.memory_swap == 256 << 20
    with pytest.raises(UsageError, match="pids-limit"):
        opts.update({"pids_limit": "-2"})
    for bad, what in (
        ({**doc, "version": 3}, "version 3"),
        ({**doc, "colour": "red"}, "colour"),
        ({**doc, "layers": "base"}, "layers"),
        ({**doc, "read_only": 1}, "read_only"),
        ({**doc, "limits": {"memory": "64m"}}, "memory"),
    ):
        with pytest.raises(TophanError, match=what):
            RunOptions.from_json(bad)


def test_run_and_app_packages_do_not_import_the_cli() -> None:
    import ast

    import tophan

    top = Path(tophan.__file__).parent
    for package in ("run", "app"):
        for path in (top / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                assert not any(n.startswith("tophan.cli") for n in names), path


def test_container_paths_resolve_inside_the_root(tmp_path: Path) -> None:
    """Where a bind mount or /etc file goes: symlinks of the image resolved as the container
    would see them, never above its root, and loops refused."""
    from tophan.errors import TophanError
    from tophan.run.container import _inside

    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/rel").symlink_to("b")
    (root / "a/abs").symlink_to("/a/b")
    (root / "up").symlink_to("../../../..")
    (root / "loop").symlink_to("/loop")
    r = str(root)
    assert _inside(r, "/a/rel/x") == f"{r}/a/b/x"
    assert _inside(r, "/a/abs/x") == f"{r}/a/b/x"
    assert _inside(r, "/a/rel/../../..") == r  # `..` after a relative link stops at the root
    assert _inside(r, "/up/etc") == f"{r}/etc"
    assert _inside(r, "../../etc/passwd") == f"{r}/etc/passwd"
    with pytest.raises(TophanError, match="symbolic links"):
        _inside(r, "/loop/x")


def test_exit_code_stdout_stderr_and_stdin_pass_through(stack: Stack) -> None:
    r = stack.run("-i", "-l", "base", "--", "sh", "-c", "read x; echo out:$x; echo err >&2; exit 7",
                  input=b"hello\n")  # fmt: skip
    assert (r.returncode, r.stdout, r.stderr) == (7, "out:hello\n", "err\n")


def test_not_found_and_not_executable(stack: Stack) -> None:
    r = stack.run("-l", "base", "--", "no-such-command")
    assert r.returncode == 127
    assert r.stderr.count("\n") == 1 and "no-such-command" in r.stderr and "not found" in r.stderr
    r = stack.run("-l", "base", "--", "/etc/passwd")
    assert r.returncode == 126 and r.stderr.count("\n") == 1


def test_every_failure_before_the_command_is_125_and_one_line(stack: Stack) -> None:
    for args, what in (
        (["-l", "base"], "no command"),
        (["no-such-image"], "no-such-image"),
        (["--pids-limit", "-2", "-l", "base", "--", "true"], "pids-limit"),
        (["--ulimit", "nofile", "-l", "base", "--", "true"], "nofile"),
        (["-l", "base", "-l", "base", "--keep-upper", str(stack.root), "--", "true"], "exists"),
        (["-l", "nope", "--", "true"], "nope"),
        (["--network", "bridge", "-l", "base", "--", "true"], "network"),
        (["-m", "lots", "-l", "base", "--", "true"], "lots"),
        (["--cap-add", "NOT_A_CAP", "-l", "base", "--", "true"], "NOT_A_CAP"),
        (["-v", "relative/path:/x", "-l", "base", "--", "true"], "relative/path"),
        (["--bogus", "-l", "base", "--", "true"], "--bogus"),
        (["-e", "A=1", "--restart", "always", "-l", "base", "--", "true"], "apps"),
        (["-d", "-l", "base", "--", "true"], "app create"),
        # The init fails before it needs its cgroup (the caller's "go on" meets a closed pipe).
        (["--tmpfs", "/bin/busybox/x", "-l", "base", "--", "true"], "Not a directory"),
    ):
        r = stack.run(*args)
        assert r.returncode == 125, (args, r)
        assert r.stderr.count("\n") == 1 and what in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
    # The overlayd entry point keeps its contract: 2 for a usage error.
    r = run_cli("--root", str(stack.root), "layer", "create", prog="overlayd")
    assert r.rc == 2 and r.err.count("\n") == 1


def _image(stack: Stack, name: str, *flags: str) -> None:
    r = run_cli("--root", str(stack.root), "image", "create", name, "-l", "base", *flags)
    assert r.rc == 0, r.err


def test_options_go_before_the_image(stack: Stack) -> None:
    _image(stack, "img", "--cmd", '["echo", "from-cmd"]')
    r = stack.run("img", "-m", "64m", "--", "true")
    assert r.returncode == 125 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "options go before IMAGE (-m follows img)" in r.stderr, r.stderr
    r = stack.run("-m", "64m", "img")
    assert (r.returncode, r.stdout) == (0, "from-cmd\n"), r.stderr
    # After `--`, the command may start with '-' (here: not found, the command's own 127).
    r = stack.run("img", "--", "-m")
    assert r.returncode == 127 and "cannot run -m" in r.stderr
    r = stack.run("img", "sh", "-c", "echo $0", "-x")  # options of the command are its own
    assert (r.returncode, r.stdout) == (0, "-x\n"), r.stderr


def test_env_rules_of_docker(stack: Stack) -> None:
    _image(stack, "envimg", "--env", "FOO=img", "--env", "BAR=img",
           "--cmd", '["sh", "-c", "echo ${FOO-unset} ${BAR-unset}; echo $PATH"]')  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k != "FOO"}
    r = stack.run("-e", "FOO", "-e", "BAR", "envimg", env={**environ, "BAR": "host"})
    assert r.returncode == 0, r.stderr
    # -e NAME: the caller's value, and unset where the caller has none (the image's included);
    # an image without PATH runs with the default PATH.
    assert r.stdout.splitlines() == [
        "unset host", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]  # fmt: skip
    r = stack.run("-e", "FOO", "-l", "base", "--", "sh", "-c", "echo ${FOO-unset}", env=environ)
    assert r.stdout == "unset\n", r.stderr


def test_init_stops_a_command_that_ignores_sigterm(stack: Stack) -> None:
    # sh as pid 1 has no handler for SIGTERM, so without --init the signal does nothing.
    p = subprocess.Popen(
        [str(BIN / "tophan"), "--root", str(stack.root), "run", "--init", "-l", "base", "--",
         "sh", "-c", "echo ready; while :; do sleep 0.05; done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert (out, err) == ("", "")


def test_init_reaps_orphans_and_passes_the_exit_code_on(stack: Stack) -> None:
    # An orphan is handed to pid 1; only a pid 1 that reaps makes its /proc entry go.
    r = stack.sh(
        "(sh -c 'echo $$ > /tmp/orphan' &); while [ ! -s /tmp/orphan ]; do sleep 0.01; done;"
        " p=$(cat /tmp/orphan); while [ -e /proc/$p ]; do sleep 0.01; done;"
        " echo reaped; echo $$; cat /proc/1/comm; exit 3",
        "--init",
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["reaped", "2", "tophan-init"]
    r = stack.run("--init", "-l", "base", "--", "no-such-command")
    assert r.returncode == 127 and r.stderr.count("\n") == 1 and "not found" in r.stderr
    r = stack.sh("kill -KILL $$", "--init")
    assert r.returncode == 128 + signal.SIGKILL


def test_pid_mount_uts_net_isolation(stack: Stack) -> None:
    r = stack.sh(
        "echo pids $(ls -d /proc/[0-9]* | wc -l); hostname; cat /proc/net/dev | tail -n +3 | "
        "cut -d: -f1 | tr -d ' '; grep -c . /proc/self/mountinfo; cat /proc/self/mountinfo",
        "--hostname",
        "box",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # sh, the pipeline's processes: a handful of our own, none of the host's hundreds
    assert lines[0].startswith("pids ") and int(lines[0].split()[1]) < 10
    assert lines[1] == "box" and os.uname().nodename != "box"
    assert lines[2] == "lo" and lines[3].isdigit()  # --network none (default): only loopback
    # only the container's own mounts: its root, /proc, /dev, /sys, /etc files, masks
    points = {line.split()[4] for line in lines[4:]}
    assert "/" in points and len(points) == int(lines[3])
    assert all(p == "/" or p.startswith(("/proc", "/dev", "/sys", "/etc/")) for p in points), points


def test_loopback_is_up_and_usable(stack: Stack) -> None:
    r = stack.sh("httpd -p 127.0.0.1:8080 -h /etc && wget -qO- http://127.0.0.1:8080/hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_host_network(stack: Stack) -> None:
    r = stack.sh("cat /proc/net/dev | tail -n +3 | wc -l", "--network", "host")
    with open("/proc/net/dev") as f:
        host = len(f.read().splitlines()) - 2
    assert r.returncode == 0 and int(r.stdout) == host


def test_writes_go_to_an_ephemeral_upper(stack: Stack) -> None:
    tree = run_cli("--root", str(stack.root), "layer", "path", "base").out.strip()
    before = sorted(os.listdir(tree + "/bin"))
    r = stack.sh("rm /bin/ls && echo x > /etc/passwd && mkdir /new && echo ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert sorted(os.listdir(tree + "/bin")) == before
    assert Path(tree, "etc/passwd").read_text().startswith("root:")
    verify = run_cli("--root", str(stack.root), "layer", "verify")
    assert verify.rc == 0, verify.out
    r = stack.sh("ls /new 2>&1; ls /bin/ls")  # a fresh upper: nothing of the last run
    assert "No such file" in r.stdout and "/bin/ls" in r.stdout


def test_keep_upper_then_commit_as_a_layer(stack: Stack, tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    r = stack.sh("echo data > /etc/app.conf && rm /bin/ls", "--keep-upper", str(keep))
    assert r.returncode == 0, r.stderr
    assert (keep / "etc/app.conf").read_text() == "data\n"
    assert os.stat(keep / "bin/ls", follow_symlinks=False).st_rdev == 0  # a whiteout
    # what the runtime mounted over is not the command's: no stubs kept
    assert not (keep / "etc/hosts").exists() and not (keep / "proc").exists()


def test_dev_proc_sys(stack: Stack) -> None:
    r = stack.sh(
        "ls /dev | tr '\\n' ' '; echo; head -c 4 /dev/urandom | wc -c; "
        "touch /sys/x 2>&1; wc -c < /proc/timer_list; "
        "sh -c 'echo 1 > /proc/sys/kernel/hostname' 2>&1; "
        "cat /proc/1/cmdline | tr '\\0' ' '"
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for node in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"):
        assert node in lines[0].split(), lines[0]
    assert lines[1].strip() == "4"
    assert "Read-only file system" in lines[2]  # /sys is read-only
    assert lines[3].strip() == "0"  # /proc/kcore is masked
    assert "Read-only file system" in lines[4]  # /proc/sys is read-only
    assert lines[5].startswith("sh -c")  # the command is pid 1


def _caps(text: str) -> dict[str, int]:
    return {
        k: int(v, 16) if k.startswith("Cap") else int(v)
        for k, v in (line.split(":\t") for line in text.splitlines() if ":\t" in line)
    }


def test_default_capabilities_no_new_privs_and_seccomp(stack: Stack) -> None:
    from tophan.run import security

    r = stack.sh("grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status")
    st = _caps(r.stdout)
    assert st["CapEff"] == st["CapBnd"] == security.cap_mask(security.DEFAULT_CAPS)
    assert st["NoNewPrivs"] == 1 and st["Seccomp"] == 2
    r = stack.sh(
        "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status",
        "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN",
        "--security-opt", "seccomp=unconfined", "--security-opt", "no-new-privileges=false",
    )  # fmt: skip
    st = _caps(r.stdout)
    want = security.resolve_caps(["NET_ADMIN"], ["CHOWN"])
    assert st["CapEff"] == security.cap_mask(want)
    assert st["NoNewPrivs"] == 0 and st["Seccomp"] == 0


def test_seccomp_blocks_a_blocked_syscall(stack: Stack) -> None:
    # unshare(CLONE_NEWUSER) needs no capability, so only the filter stands in its way
    # (moby's profile allows unshare only with CAP_SYS_ADMIN).
    r = stack.sh("unshare -U true; echo rc=$?")
    assert "rc=0" not in r.stdout and "Operation not permitted" in r.stderr, (r.stdout, r.stderr)
    r = stack.sh("unshare -U true; echo rc=$?", "--security-opt", "seccomp=unconfined")
    assert "rc=0" in r.stdout, r.stderr


def test_device_nodes_made_inside_cannot_be_opened(stack: Stack) -> None:
    # With CAP_MKNOD added (podman's default set has none), the mounts are nodev, so a node
    # for the host's root disk made inside is useless, while /dev/null (a host node) works.
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    r = stack.sh(f"mknod /disk b {major} {minor} && head -c 1 /disk; echo rc=$?;"
                 f" mknod /dev/disk b {major} {minor} && head -c 1 /dev/disk; echo rc=$?;"
                 " echo x > /dev/null && echo null-ok", "--cap-add", "MKNOD")  # fmt: skip
    assert r.stdout.splitlines() == ["rc=1", "rc=1", "null-ok"], (r.stdout, r.stderr)
    assert r.stderr.count("Permission denied") == 2, r.stderr


def test_capabilities_are_enforced(stack: Stack) -> None:
    r = stack.sh("chown 1000 /etc/hostname; echo rc=$?", "--cap-drop", "CHOWN")
    assert "rc=1" in r.stdout
    r = stack.sh("chown 1000 /etc/passwd; echo rc=$?")
    assert "rc=0" in r.stdout


def test_user_env_workdir_rlimits(stack: Stack) -> None:
    r = stack.sh("id -u; id -g; echo $HOME $FOO $PATH; pwd; ulimit -n", "-u", "user",
                 "-e", "FOO=bar", "-w", "/tmp/work", "--ulimit", "nofile=123:456")  # fmt: skip
    assert r.returncode == 0, r.stderr
    uid, gid, env, cwd, nofile = r.stdout.splitlines()
    assert (uid, gid) == ("1000", "1000")
    assert env.startswith("/home/user bar /usr/local/sbin")
    assert cwd == "/tmp/work" and nofile == "123"
    r = stack.sh("id -u; id -g; grep CapEff /proc/self/status", "-u", "4242:4343")
    uid, gid, capeff = r.stdout.splitlines()
    assert (uid, gid) == ("4242", "4343") and capeff.endswith("0000000000000000")
    r = stack.sh("true", "-u", "nobody-here")
    assert r.returncode == 125 and "nobody-here" in r.stderr and r.stderr.count("\n") == 1


def test_bind_mounts_and_named_volumes(stack: Stack, tmp_path: Path) -> None:
    host = tmp_path / "share"
    host.mkdir()
    (host / "in").write_text("from host\n")
    r = stack.sh("cat /data/in; echo out > /data/out; echo v > /vol/file",
                 "-v", f"{host}:/data", "-v", "cache:/vol")  # fmt: skip
    assert r.returncode == 0 and r.stdout == "from host\n", r.stderr
    assert (host / "out").read_text() == "out\n"
    r = stack.sh("cat /vol/file; echo x > /data/ro", "-v", "cache:/vol",
                 "-v", f"{host}:/data:ro")  # fmt: skip
    assert r.stdout.splitlines()[0] == "v" and "Read-only file system" in r.stderr
    vols = run_cli("--root", str(stack.root), "volume", "ls")
    assert vols.out.startswith("cache\t")
    assert run_cli("--root", str(stack.root), "volume", "rm", "cache").rc == 0


def test_read_only_root_and_tmpfs(stack: Stack) -> None:
    r = stack.sh("touch /x 2>&1; touch /scratch/y && echo ok", "--read-only", "--tmpfs", "/scratch")
    assert "Read-only file system" in r.stdout and "ok" in r.stdout


def test_memory_limit_oom_kills(stack: Stack) -> None:
    r = stack.sh("a=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
                 "-m", "32m", "--memory-swap", "32m")  # fmt: skip
    assert r.returncode == 137 and "survived" not in r.stdout


def test_pids_limit_stops_a_fork_loop(stack: Stack) -> None:
    # A shell aborts when it cannot fork, so the loop runs in a child shell; the parent counts
    # with builtins only (it cannot fork either once the limit is reached).
    loop = "i=0; while [ $i -lt 60 ]; do sleep 5 & echo $! >> /tmp/pids; i=$((i+1)); done"
    r = stack.sh(
        f"sh -c '{loop}' 2>/dev/null; echo loop-rc=$?; n=0;"
        " while read p; do n=$((n+1)); kill $p; done < /tmp/pids; echo started $n",
        "--pids-limit", "20",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "loop-rc=0" not in r.stdout  # the loop was stopped...
    assert 0 < int(r.stdout.split()[-1]) < 20  # ...below the limit


def test_limits_are_in_the_cgroup(stack: Stack) -> None:
    r = stack.sh("cat /proc/self/cgroup", "-m", "64m", "--cpus", "0.5", "--pids-limit", "99")
    assert r.returncode == 0
    # the cgroup namespace hides the host's hierarchy: the container sees itself at the root
    assert all(line.endswith(":/") for line in r.stdout.splitlines()), r.stdout


def test_signals_are_forwarded(stack: Stack) -> None:
    p = subprocess.Popen(
        [str(BIN / "tophan"), "--root", str(stack.root), "run", "-l", "base", "--", "sh", "-c",
         "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 42 and out == "got-term\n", err


def test_killed_container_reports_128_plus_signal(stack: Stack) -> None:
    from tophan.run import container as runtime
    from tophan.store import Store

    store = Store(str(stack.root))
    base = store.layers.get("base")
    spec = runtime.Spec([store.layers.tree_path(base.digest)], ["sleep", "60"])
    spec.digests = [base.digest]
    ctr = runtime.start(store, spec)
    try:
        ctr.signal(signal.SIGKILL)
        assert ctr.wait() == 128 + signal.SIGKILL
    finally:
        ctr.close()


def test_caller_killed_leaves_nothing(stack: Stack) -> None:
    p = subprocess.Popen(
        [str(BIN / "tophan"), "--root", str(stack.root), "run", "-m", "64m", "-l", "base", "--",
         "sh", "-c", "echo ready; exec sleep 300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    try:
        assert p.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10
        while not _pids_of("sleep 300") and time.monotonic() < deadline:
            time.sleep(0.02)  # sh has printed "ready"; its exec of sleep is a moment later
        assert _pids_of("sleep 300")
    finally:
        p.kill()
        p.wait()
    deadline = time.monotonic() + 30
    while _pids_of("sleep 300") and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _pids_of("sleep 300")
    assert not left, f"the container outlived its caller: {_describe(left)}"
    # The run dir (unlocked now) and the empty cgroup are what gc cleans (gc spares cgroups
    # younger than 10 s, which a starting run may have made a moment ago: prune it here).
    gc = run_cli("--root", str(stack.root), "gc")
    assert gc.rc == 0 and "staging_removed=1" in gc.out, gc.out
    _prune_killed_runs()


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                keep = ("State", "PPid", "NSpid", "SigBlk", "SigIgn", "SigCgt", "CapPrm", "CapBnd")
                fields = [line.strip() for line in f if line.split(":")[0] in keep]
            with open(f"/proc/{pid}/wchan") as f:
                fields.append(f"wchan={f.read()}")
        except OSError as e:
            fields = [str(e)]
        out.append(f"{pid}: {'; '.join(fields)}")
    return " | ".join(out)


def _prune_killed_runs() -> None:
    """Remove the cgroups of runs whose caller was SIGKILLed, once their processes are gone."""
    from tophan.run import container as runtime

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runtime.prune_stale_cgroups(min_age=0)
        if not any(c.startswith("run-") for c in _our_cgroups()):
            return
        time.sleep(0.05)


def _pids_of(cmdline: str) -> list[int]:
    """Live processes with this command line (zombies are dead: this host's pid 1 may be slow
    to reap the orphans it inherits)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").strip() != cmdline.encode():
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                        continue
            except OSError:
                continue
            out.append(int(pid))
    return out


def test_api_run_in_process(stack: Stack) -> None:
    from tophan.run import container as runtime
    from tophan.store import Store

    store = Store(str(stack.root))
    base = store.layers.get("base")
    r, w = os.pipe()
    spec = runtime.Spec([store.layers.tree_path(base.digest)], ["sh", "-c", "echo api; exit 3"])
    spec.digests = [base.digest]
    ctr = runtime.start(store, spec, stdio=(0, w, 2))
    os.close(w)
    try:
        assert ctr.wait() == 3
    finally:
        ctr.close()
    with os.fdopen(r) as f:
        assert f.read() == "api\n"


def test_gc_keeps_layers_of_a_live_run(stack: Stack) -> None:
    p = subprocess.Popen(
        [str(BIN / "tophan"), "--root", str(stack.root), "run", "-l", "base", "--",
         "sh", "-c", "echo ready; sleep 300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    try:
        assert p.stdout.readline() == "ready\n"
        assert run_cli("--root", str(stack.root), "layer", "rm", "base").rc == 0
        gc = run_cli("--root", str(stack.root), "gc")
        assert "layers_removed=0" in gc.out, gc.out
    finally:
        p.send_signal(signal.SIGINT)  # forwarded; sh as pid 1 ignores it: then kill
        time.sleep(0.2)
        p.kill()
        p.wait()
        _prune_killed_runs()  # what the killed caller could not remove
    gc = run_cli("--root", str(stack.root), "gc")
    assert "layers_removed=1" in gc.out, gc.out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
