"""Apps and their supervisor (tophand): real containers, cgroups and processes, as root.

Every test removes its apps (stopping them) and checks that no supervisor, container process,
mount or cgroup of its own is left.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import BIN, busybox_full_rootfs, run_cli
from rootless import RootlessUser, run_as_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs apps as root")


class Env:
    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def t(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "tophan"), "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        r = self.t(*args)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def state(self, name: str) -> dict[str, object]:
        out = json.loads(self.ok("app", "inspect", name))
        state: dict[str, object] = out[0]["state"]
        return state

    def wait_for(self, what: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting; last ps: {self.t('app', 'ps', '-a').stdout}"
                )
            time.sleep(0.05)


def _supervisor_of(pid: int | str) -> str | None:
    """The app a live process named `tophand` supervises (its command line's last word)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if comm != "tophand" or not _alive(int(pid)):
            return None
    except OSError:
        return None
    args = [a for a in args if a]
    return args[-1].decode(errors="replace") if args else None


def _supervisors(names: set[str]) -> list[int]:
    """Live `tophand` processes for these app names."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _supervisor_of(p) in names]


@pytest.fixture
def env(root: Path, tmp_path: Path, own_netns: None) -> Iterator[Env]:
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    (tmp_path / "www/www").mkdir(parents=True)
    (tmp_path / "www/www/index.html").write_text("<h1>hello</h1>\n")
    (tmp_path / "conf/etc").mkdir(parents=True)
    (tmp_path / "conf/etc/httpd.conf").write_text("H:/www\n")
    for name, src in (("base", rootfs), ("www", tmp_path / "www"), ("conf", tmp_path / "conf")):
        assert run_cli("--root", str(root), "layer", "create", name, "--from", str(src)).rc == 0
    e = Env(root, tmp_path)
    try:
        yield e
    finally:
        apps = json.loads(e.t("app", "ps", "-a", "--json").stdout or "[]")
        names = {a["name"] for a in apps}
        for name in names:
            e.t("app", "rm", "-f", name)
        deadline = time.monotonic() + 5  # the lock goes a moment before the process does
        while _supervisors(names) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _supervisors(names)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, "a supervisor outlived its app"
        assert [d for d in os.listdir(root / "tmp") if d.startswith("run-")] == []
        from tophan.run import cgroup

        if cgroup.unavailable(cgroup.Limits()) is None:
            # Only this test's apps: other test runs on the machine may have theirs.
            ours = tuple(f"app-{n}-" for n in names)
            mine = [c for c in cgroup.list_ours() if ours and c.startswith(ours)]
            assert not mine, mine


WEB = ["-l", "conf", "-l", "www", "-l", "base", "--", "httpd", "-f", "-p", "127.0.0.1:8080",
       "-c", "/etc/httpd.conf"]  # fmt: skip


def test_create_validates_and_points_at_the_key(env: Env) -> None:
    bad = env.tmp / "bad.toml"
    for text, where in (
        ('layers = ["base"]\ncommand = "true"\n[resources]\nmemory = "lots"\n', "resources.memory"),
        ('layers = ["base"]\ncommand = "true"\n[resources]\nmemroy = "1g"\n', "resources.memroy"),
        ('layers = ["base"]\ncommand = 5\n', "command"),
        ('layers = ["base"]\ncommand = "true"\n[health]\ninterval = "5s"\n', "health"),
        ('layers = ["base"]\ncommand = "true"\n[restart]\npolicy = "sometimes"\n', "restart"),
        ('layers = ["base"]\ncommand = "true"\nfoo = 1\n', "foo"),
        ('layers = ["base"]\ncommand = "true"\nread_only = "yes"\n', "read_only"),
        ("layers = [\n", "TOML"),
    ):
        bad.write_text(text)
        r = env.t("app", "create", "tbad", "--file", str(bad))
        assert r.returncode == 2, (text, r.stderr)
        assert r.stderr.count("\n") == 1 and where in r.stderr, (text, r.stderr)
        assert "Traceback" not in r.stderr
    r = env.t("app", "create", "tbad", "-l", "missing", "--", "true")
    assert r.returncode == 1 and "missing" in r.stderr
    assert env.t("app", "ps", "-a").stdout.count("\n") == 1  # the header: nothing was created


def test_spec_file_and_flags(env: Env) -> None:
    spec = env.tmp / "web.toml"
    spec.write_text(
        'layers = ["conf", "www", "base"]\n'
        'command = ["httpd", "-f", "-p", "127.0.0.1:8080", "-c", "/etc/httpd.conf"]\n'
        'env = { GREETING = "hi" }\n'
        "init = true\n"  # httpd as pid 1 would ignore the stop signal: stop would wait 10 s
        '[resources]\nmemory = "64m"\npids_limit = 32\n'
        '[health]\nhttp = "http://127.0.0.1:8080/"\ninterval = "0.2s"\nretries = 2\n'
        '[restart]\npolicy = "on-failure"\nmax_retries = 2\n'
    )
    env.ok("app", "create", "tweb", "--file", str(spec), "-e", "EXTRA=1")
    stored = json.loads((env.root / "apps/tweb/spec.json").read_text())
    assert stored["version"] == 2 and stored["run"]["layers"] == ["conf", "www", "base"]
    assert stored["run"]["env"] == {"GREETING": "hi", "EXTRA": "1"} and stored["run"]["init"]
    env.ok("app", "start", "tweb")
    env.wait_for(lambda: env.state("tweb").get("health", {}).get("status") == "healthy")  # type: ignore[union-attr]
    out = env.ok("app", "exec", "tweb", "--", "sh", "-c", "echo $GREETING $EXTRA; hostname")
    assert out == "hi 1\ntweb\n"
    page = env.ok("app", "exec", "tweb", "--", "wget", "-qO-", "http://127.0.0.1:8080/")
    assert page == "<h1>hello</h1>\n"
    ps = json.loads(env.ok("app", "ps", "--json"))
    assert ps[0]["name"] == "tweb" and ps[0]["status"] == "running" and ps[0]["health"] == "healthy"
    assert _supervisor_of(ps[0]["supervisor"]) == "tweb"
    env.ok("app", "stop", "tweb")
    assert env.state("tweb")["status"] == "exited"


# spec.json as `app create` wrote it before RunOptions (version 1: the CLI's flag dict), for
#   PASSED=yes tophan app create tmig --file web.toml -e EXTRA=1 -e PASSED -e UNSET_HERE
#     --ulimit nofile=100:200 --cap-drop CHOWN --security-opt no-new-privileges=false
#     --tmpfs /scratch --entrypoint "" -w /tmp --stop-signal INT --rm
OLD_SPEC = {
    "command": ["sh", "-c", "echo $GREETING; ulimit -n; sleep 60"],
    "created_at": 1796424473.4693975,
    "health": {"address": "", "cmd": ["/bin/sh", "-c", "true"], "interval": 0.2, "kind": "cmd",
               "retries": 3, "start_period": 0.0, "timeout": 30.0, "url": ""},
    "layers": ["base"],
    "log": {"max_files": 2, "max_size": 1048576},
    "name": "tmig",
    "opts": {
        "cap_drop": ["CHOWN"], "entrypoint": [""],
        "env": ["GREETING=hi", "EXTRA=1", "PASSED", "UNSET_HERE"],
        "memory": "64m", "pids_limit": "32", "rm": True,
        "security_opt": ["no-new-privileges=false"], "tmpfs": ["/scratch"],
        "ulimit": ["nofile=100:200"], "volume": ["tmigdata:/data"], "workdir": "/tmp",
    },
    "restart": {"max_retries": 2, "policy": "on-failure"},
    "stop_signal": "SIGINT",
    "stop_timeout": 2.0,
}  # fmt: skip


def test_old_spec_is_migrated_on_first_read(env: Env) -> None:
    d = env.root / "apps/tmig"
    (d / "logs").mkdir(parents=True, mode=0o755)
    (d / "lock").touch(0o644)
    d.chmod(0o755)
    (d / "spec.json").write_text(json.dumps(OLD_SPEC, indent=1))
    # The first reader migrates: `-e NAME` takes its value from the reader's environment.
    environ = {k: v for k, v in os.environ.items() if k != "UNSET_HERE"}
    r = subprocess.run(
        [str(BIN / "tophan"), "--root", str(env.root), "app", "ps", "-a"],
        env={**environ, "PASSED": "yes"}, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and "tmig" in r.stdout, r.stderr
    spec = json.loads((d / "spec.json").read_text())
    assert spec["version"] == 2 and spec["run"]["version"] == 2
    run = spec["run"]
    assert run["layers"] == ["base"] and run["entrypoint"] == []
    assert run["env"] == {"GREETING": "hi", "EXTRA": "1", "PASSED": "yes", "UNSET_HERE": None}
    assert run["limits"]["memory"] == 64 << 20 and run["limits"]["pids"] == 32
    assert run["volumes"] == [{"source": "tmigdata", "target": "/data", "readonly": False}]
    assert run["ulimits"] == {"nofile": [100, 200]} and run["tmpfs"] == ["/scratch"]
    assert run["cap_drop"] == ["CHOWN"] and run["no_new_privileges"] is False
    assert spec["restart"] == {"policy": "on-failure", "max_retries": 2}
    assert spec["health"]["kind"] == "cmd" and spec["stop_signal"] == "SIGINT"
    assert spec["stop_timeout"] == 2.0 and spec["log"] == {"max_size": 1 << 20, "max_files": 2}
    assert spec["created_at"] == OLD_SPEC["created_at"]
    # The old app (0755 dirs, 0644 files) became private with the same write (#5).
    assert d.stat().st_mode & 0o777 == 0o700 and (d / "logs").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (d / "spec.json", d / "lock"))
    # ... and the migrated app runs with every option the old one had.
    env.ok("app", "start", "tmig")
    env.wait_for(lambda: env.state("tmig")["health"]["status"] == "healthy")  # type: ignore[index]
    out = env.ok("app", "exec", "tmig", "--", "sh", "-c",
                 "echo $GREETING $EXTRA $PASSED ${UNSET_HERE-unset}; pwd;"
                 " grep NoNewPrivs /proc/self/status; grep -o ' /scratch tmpfs' /proc/mounts;"
                 " grep -c ' /data ' /proc/mounts")  # fmt: skip
    assert out.splitlines() == ["hi 1 yes unset", "/tmp", "NoNewPrivs:\t0", " /scratch tmpfs",
                                "1"], out  # fmt: skip
    assert env.ok("app", "logs", "tmig") == "hi\n100\n"  # the app's own ulimit
    env.ok("app", "rm", "-f", "tmig")
    env.ok("volume", "rm", "tmigdata")


def test_unreadable_spec_versions_are_refused(env: Env) -> None:
    d = env.root / "apps/tnew"
    (d / "logs").mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps({"version": 3, "run": {}}))
    r = env.t("app", "start", "tnew")
    assert r.returncode == 1 and "version 3" in r.stderr and r.stderr.count("\n") == 1


def test_health_starting_healthy_unhealthy(env: Env) -> None:
    env.ok("app", "create", "thealth", "--health-cmd", "wget -qO- http://127.0.0.1:8080/",
           "--health-interval", "0.2s", "--health-retries", "2", "--health-timeout", "2s",
           *WEB)  # fmt: skip
    env.ok("app", "start", "thealth")
    assert env.state("thealth")["health"]["status"] == "starting"  # type: ignore[index]
    env.wait_for(lambda: env.state("thealth")["health"]["status"] == "healthy")  # type: ignore[index]
    env.ok("app", "exec", "thealth", "--", "rm", "/www/index.html")  # the check starts failing
    env.wait_for(lambda: env.state("thealth")["health"]["status"] == "unhealthy")  # type: ignore[index]
    health = env.state("thealth")["health"]
    assert health["failing_streak"] >= 2  # type: ignore[index]
    assert health["log"][-1]["exit_code"] != 0  # type: ignore[index]
    assert env.state("thealth")["status"] == "running"  # unhealthy does not restart (Docker)


def test_tcp_health_check(env: Env) -> None:
    env.ok("app", "create", "ttcp", "--health-tcp", "127.0.0.1:8080", "--health-interval", "0.2s",
           *WEB)  # fmt: skip
    env.ok("app", "start", "ttcp")
    env.wait_for(lambda: env.state("ttcp")["health"]["status"] == "healthy")  # type: ignore[index]


def test_restart_on_failure_with_backoff(env: Env) -> None:
    env.ok("app", "create", "tfail", "--restart", "on-failure:3", "-l", "base", "--",
           "sh", "-c", "cat /proc/uptime; exit 3")  # fmt: skip
    env.ok("app", "start", "tfail")
    env.wait_for(lambda: not env.state("tfail")["alive"])
    st = env.state("tfail")
    assert st["restart_count"] == 3 and st["exit_code"] == 3 and st["status"] == "exited"
    starts = [float(line.split()[0]) for line in env.ok("app", "logs", "tfail").splitlines()]
    assert len(starts) == 4
    # Docker's backoff: 100 ms, doubling. A wait can only be longer than its backoff.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, backoff in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert gap >= backoff, gaps


def test_restart_always_and_on_failure_stops_on_success(env: Env) -> None:
    env.ok("app", "create", "tok", "--restart", "on-failure", "-l", "base", "--", "true")
    env.ok("app", "start", "tok")
    env.wait_for(lambda: not env.state("tok")["alive"])
    assert env.state("tok")["restart_count"] == 0 and env.state("tok")["exit_code"] == 0
    env.ok("app", "create", "talways", "--restart", "always", "-l", "base", "--", "true")
    env.ok("app", "start", "talways")
    env.wait_for(lambda: int(env.state("talways")["restart_count"]) >= 2)  # type: ignore[call-overload]
    env.ok("app", "stop", "talways")
    assert env.state("talways")["status"] == "exited"


def test_stop_grace_then_kill(env: Env) -> None:
    env.ok("app", "create", "tstubborn", "-l", "base", "--", "sh", "-c",
           "trap 'echo ignoring TERM' TERM; while :; do sleep 0.1; done")  # fmt: skip
    env.ok("app", "create", "tpolite", "-l", "base", "--", "sh", "-c",
           "trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done")  # fmt: skip
    env.ok("app", "start", "tstubborn", "tpolite")
    env.ok("app", "stop", "tpolite")
    assert env.state("tpolite")["exit_code"] == 0
    assert "bye" in env.ok("app", "logs", "tpolite")
    env.ok("app", "stop", "-t", "0.5", "tstubborn")
    st = env.state("tstubborn")
    assert st["exit_code"] == 137 and st["status"] == "exited"
    assert "ignoring TERM" in env.ok("app", "logs", "tstubborn")


def test_supervisor_sigkill_leaves_nothing(env: Env) -> None:
    env.ok("app", "create", "tkill", "--init", "-m", "64m", *WEB)
    env.ok("app", "start", "tkill")
    st = env.state("tkill")
    sup, pid = int(st["supervisor"]), int(st["pid"])  # type: ignore[call-overload]
    os.kill(sup, signal.SIGKILL)
    env.wait_for(lambda: not _alive(pid))
    st = env.state("tkill")
    assert st["status"] == "dead" and not st["alive"]  # the stale "running" is not trusted
    ps = json.loads(env.ok("app", "ps", "-a", "--json"))
    assert ps[0]["status"] == "dead"
    env.ok("app", "start", "tkill")  # cleans up the dead one's cgroup, starts afresh
    assert env.state("tkill")["status"] == "running"
    env.ok("app", "stop", "tkill")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_exec_joins_the_app(env: Env) -> None:
    env.ok("app", "create", "texec", "--init", "-e", "APPVAR=1", *WEB)
    env.ok("app", "start", "texec")
    out = env.ok("app", "exec", "texec", "--", "sh", "-c",
                 "echo $APPVAR; hostname; cat /proc/2/cmdline | tr '\\0' ' '; echo; "
                 "grep -c . /proc/net/dev; cat /proc/1/comm")  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "1" and lines[1] == "texec" and lines[2].startswith("httpd")
    assert lines[4] == "tophan-init"  # --init: the command is pid 2
    # header lines + lo + eth0: the app's own network namespace, on the default private network
    assert lines[3] == "4"
    r = env.t("app", "exec", "texec", "--", "sh", "-c", "exit 5")
    assert r.returncode == 5
    r = env.t("app", "exec", "-u", "user", "texec", "--", "id", "-u")
    assert r.stdout == "1000\n"
    r = env.t("app", "exec", "texec", "-u", "user", "--", "id", "-u")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "options go before NAME (-u follows texec)" in r.stderr
    env.ok("app", "stop", "texec")
    r = env.t("app", "exec", "texec", "--", "true")
    assert r.returncode == 2 and "not running" in r.stderr


def test_logs_rotate_and_follow(env: Env) -> None:
    env.ok("app", "create", "tlog", "--log-opt", "max-size=1k", "--log-opt", "max-file=2",
           "-l", "base", "--", "sh", "-c",
           "i=0; while [ $i -lt 100 ]; do echo line-$i-padding-padding; i=$((i+1)); done;"
           " sleep 0.5; echo last")  # fmt: skip
    env.ok("app", "start", "tlog")
    follow = subprocess.run(
        [str(BIN / "tophan"), "--root", str(env.root), "app", "logs", "-f", "tlog"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert follow.returncode == 0 and follow.stdout.endswith("last\n")
    logs = env.root / "apps/tlog/logs"
    assert sorted(os.listdir(logs)) == ["app.log", "app.log.1", "tophand.log"]
    assert os.path.getsize(logs / "app.log.1") <= 1024
    out = env.ok("app", "logs", "tlog")
    assert "line-0-" not in out  # rotated away
    assert out.endswith("last\n") and env.ok("app", "logs", "--tail", "1", "tlog") == "last\n"


def test_volumes_persist_and_are_held(env: Env) -> None:
    env.ok("app", "create", "tvol", "-v", "tdata:/data", "-l", "base", "--", "sh", "-c",
           "echo seen:$(cat /data/count 2>/dev/null); echo run >> /data/count;"
           " sleep 60")  # fmt: skip
    env.ok("app", "start", "tvol")
    r = env.t("volume", "rm", "tdata")
    assert r.returncode == 1 and "in use" in r.stderr
    env.ok("app", "restart", "-t", "0.2", "tvol")
    env.wait_for(lambda: "seen:run" in env.ok("app", "logs", "tvol"))  # the first run's write
    env.ok("app", "stop", "-t", "0.2", "tvol")
    assert env.ok("app", "logs", "tvol").splitlines() == ["seen:", "seen:run"]
    env.ok("app", "rm", "tvol")
    env.ok("volume", "rm", "tdata")


def test_rm_and_start_errors(env: Env) -> None:
    env.ok("app", "create", "trm", "-l", "base", "--", "sleep", "60")
    r = env.t("app", "create", "trm", "-l", "base", "--", "true")
    assert r.returncode == 1 and "exists" in r.stderr
    env.ok("app", "start", "trm")
    r = env.t("app", "rm", "trm")
    assert r.returncode == 1 and "running" in r.stderr and r.stderr.count("\n") == 1
    r = env.t("layer", "rm", "base")
    assert r.returncode == 1 and "app trm" in r.stderr
    env.ok("app", "rm", "-f", "trm")
    r = env.t("app", "start", "trm")
    assert r.returncode == 1 and "no such app" in r.stderr
    env.ok("app", "create", "tbadcmd", "-l", "base", "--", "no-such-binary")
    r = env.t("app", "start", "tbadcmd")
    assert r.returncode == 127 and "no-such-binary" in r.stderr and r.stderr.count("\n") == 1


# -- privacy (issue 8 #5) ------------------------------------------------------------------------


@pytest.fixture
def shared_env(rootless_user: RootlessUser, tmp_path: Path, own_netns: None) -> Iterator[Env]:
    """An Env whose store another local user can reach (the store's top made 0755, as older
    stores were): what keeps the apps private must be the apps' own modes."""
    import shutil
    import uuid

    root = rootless_user.base / f"store-{uuid.uuid4().hex[:8]}"
    assert run_cli("init", str(root)).rc == 0
    root.chmod(0o755)
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    e = Env(root, tmp_path)
    try:
        yield e
    finally:
        for a in json.loads(e.t("app", "ps", "-a", "--json").stdout or "[]"):
            e.t("app", "rm", "-f", a["name"])
        shutil.rmtree(root)


def _modes(top: Path) -> dict[str, int]:
    return {str(p.relative_to(top)): p.stat().st_mode & 0o777 for p in [top, *top.rglob("*")]}


def _assert_private(app_dir: Path) -> None:
    assert app_dir.parent.stat().st_mode & 0o777 == 0o700
    for rel, mode in _modes(app_dir).items():
        want = 0o700 if (app_dir / rel).is_dir() else 0o600
        assert mode == want, (rel, oct(mode))


def test_app_specs_state_and_logs_are_private_to_the_owner(
    shared_env: Env, rootless_user: RootlessUser
) -> None:
    """#5: `-e DB_PASSWORD=...` was in a 0644 spec.json under 0755 dirs, and `app inspect` as
    any user printed it. Now a local user can read none of spec, state, logs, nor inspect."""
    env = shared_env
    secret = "s3cret-" + os.urandom(4).hex()
    cmd = ["-e", f"DB_PASSWORD={secret}", "-l", "base", "--", "sh", "-c",
           "echo pw=$DB_PASSWORD; exec sleep 1000"]  # fmt: skip
    # A permissive umask changes nothing.
    created = subprocess.run(
        [str(BIN / "tophan"), "--root", str(env.root), "app", "create", "tpriv", *cmd],
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    env.ok("app", "start", "tpriv")
    app_dir = env.root / "apps" / "tpriv"
    env.wait_for(lambda: secret in (app_dir / "logs/app.log").read_text())
    _assert_private(app_dir)
    for name in ("spec.json", "state.json", "logs/app.log"):
        r = run_as_user(rootless_user, ["cat", str(app_dir / name)], unshare=False, timeout=60)
        assert r.returncode != 0 and secret not in r.stdout, (name, r.stdout)
    tophan = str(rootless_user.bin / "tophan")
    for args in (["app", "inspect", "tpriv"], ["app", "ps", "-a"], ["app", "logs", "tpriv"]):
        r = run_as_user(
            rootless_user, [tophan, "--root", str(env.root), *args], unshare=False, timeout=60
        )
        assert r.returncode != 0, (args, r.stdout)
        assert secret not in r.stdout + r.stderr, args
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "private" in r.stderr or "ermission denied" in r.stderr, (args, r.stderr)


def test_older_apps_become_private_at_start(shared_env: Env) -> None:
    """Apps made before: 0755 dirs and 0644 files (the lock, the logs) are fixed at start."""
    env = shared_env
    env.ok("app", "create", "told", "-e", "TOKEN=t0k", "-l", "base", "--", "sleep", "1000")
    app_dir = env.root / "apps" / "told"
    (app_dir / "logs/app.log").write_text("old output\n")
    for p in [app_dir.parent, app_dir, app_dir / "logs"]:
        p.chmod(0o755)
    for p in [app_dir / "spec.json", app_dir / "lock", app_dir / "logs/app.log"]:
        p.chmod(0o644)
    env.ok("app", "start", "told")
    env.wait_for(lambda: env.state("told")["status"] == "running")
    _assert_private(app_dir)
