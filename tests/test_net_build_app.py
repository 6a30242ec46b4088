"""Private networks used by `tophan build --network private` and by apps (`network`, `ports`),
inside a network namespace the test makes as "the host" (never the machine's own network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import busybox_full_rootfs, run_cli
from test_net import HostNs, _ns_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces as root")


def test_run_steps_on_a_private_network(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("layer", "create", "bb", "--from", str(rootfs), root=root).rc == 0
    assert run_cli("image", "create", "bb", "-l", "bb", root=root).rc == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        "FROM bb\nRUN ip -o -4 addr show dev eth0 > /addr && grep -q tophan-build /etc/hosts\n"
    )
    name = _ns_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    host = HostNs(name, root)
    try:
        host.sh("ip link set lo up")
        r = host.tophan("build", "--network", "private", "-t", "x", str(ctx))
        assert r.returncode == 0, (r.stdout, r.stderr)
        out = run_cli("run", "x", "--", "cat", "/addr", root=root).out
        assert " eth0 " in out and " inet " in out, out
        # the step's layer holds what it wrote, nothing of the network's files
        info = run_cli("image", "inspect", "x", root=root).out
        import json

        top = json.loads(info)["layers"][-1]["path"]
        assert sorted(os.listdir(top)) == ["addr"]
        host.assert_clean()  # its veth, rules and lease are gone with the step
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    assert os.listdir(root / "tmp") == []


def test_unknown_build_network_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM scratch\n")
    r = run_cli("build", "--network", "bridge", "-t", "x", str(ctx), root=root)
    assert r.rc == 2 and r.err.count("\n") == 1 and "private" in r.err, r.err


def test_app_on_a_private_network_with_a_published_port(tmp_path: Path) -> None:
    """An app from a TOML spec with `ports` and no `network` (an app's default is private):
    reachable on the host's 127.0.0.1, healthy through its own namespace, its published ports
    (with the host port picked for a bare container port) shown by `app ps` and `app inspect`,
    and gone without a trace on rm; then again, and after SIGKILL of the supervisor and the
    container, `gc` leaves no interface, rule or lease behind."""
    import json
    import re
    import signal
    import time

    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("layer", "create", "bb", "--from", str(rootfs), root=root).rc == 0
    spec = tmp_path / "web.toml"
    spec.write_text(
        'layers = ["bb"]\n'
        'command = "echo hi-from-web > /tmp/index.html; exec httpd -f -p 80 -h /tmp"\n'
        'ports = ["8080:80", "9000"]\n'
        "init = true\n"
        '[health]\ntcp = "127.0.0.1:80"\ninterval = "0.2s"\n'
    )
    name = _ns_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    host = HostNs(name, root)
    try:
        host.sh("ip link set lo up")
        r = host.tophan("app", "create", "web", "--file", str(spec))
        assert r.returncode == 0, r.stderr
        r = host.tophan("app", "start", "web")
        assert r.returncode == 0, r.stderr
        assert host.fetch("http://127.0.0.1:8080/index.html") == "hi-from-web"
        deadline = time.monotonic() + 30
        while True:
            ps = json.loads(host.tophan("app", "ps", "--json").stdout)
            if ps[0]["health"] == "healthy":
                break
            assert time.monotonic() < deadline, ps
            time.sleep(0.1)
        assert ps[0]["network"] == "private"
        picked = ps[0]["ports"]
        assert picked[0] == "0.0.0.0:8080->80/tcp"
        m = re.fullmatch(r"0\.0\.0\.0:(\d+)->9000/tcp", picked[1])
        assert m and int(m.group(1)) > 0, picked
        table = host.tophan("app", "ps").stdout.splitlines()
        assert "PORTS" in table[0] and "0.0.0.0:8080->80/tcp" in table[1]
        state = json.loads(host.tophan("app", "inspect", "web").stdout)[0]["state"]
        assert state["ports"] == picked
        r = host.tophan("app", "rm", "-f", "web")
        assert r.returncode == 0, r.stderr
        host.assert_clean()

        # SIGKILL of the supervisor and of the container, then gc
        assert host.tophan("app", "create", "web", "--file", str(spec)).returncode == 0
        assert host.tophan("app", "start", "web").returncode == 0, r.stderr
        assert host.fetch("http://127.0.0.1:8080/index.html") == "hi-from-web"
        state = json.loads(host.tophan("app", "inspect", "web").stdout)[0]["state"]
        os.kill(state["supervisor"], signal.SIGKILL)
        os.kill(state["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while [x for x in host.links() if x.startswith("tv")] and time.monotonic() < deadline:
            time.sleep(0.1)  # the veth goes with the container's namespace
        assert host.leases() and host.publish_rules()  # left behind until gc
        r = host.tophan("gc")
        assert r.returncode == 0, r.stderr
        host.assert_clean()
    finally:
        host.tophan("app", "rm", "-f", "web")
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_two_apps_same_port_and_by_name(tmp_path: Path) -> None:
    """Two apps listening on the same container port, published on two host ports, both
    reachable from the host's 127.0.0.1; one reaches the other by name; when one stops, the
    other's /etc/hosts forgets it."""
    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("layer", "create", "bb", "--from", str(rootfs), root=root).rc == 0
    name = _ns_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    host = HostNs(name, root)
    serve = "echo hi-from-$(hostname) > /tmp/index.html; exec httpd -f -p 80 -h /tmp"
    try:
        host.sh("ip link set lo up")
        for app, port in (("web1", "18181"), ("web2", "18182")):
            r = host.tophan("app", "create", app, "--init", "-p", f"{port}:80", "-l", "bb",
                            "--", "sh", "-c", serve)  # fmt: skip
            assert r.returncode == 0, r.stderr
            r = host.tophan("app", "start", app)
            assert r.returncode == 0, r.stderr
        assert host.fetch("http://127.0.0.1:18181/index.html") == "hi-from-web1"
        assert host.fetch("http://127.0.0.1:18182/index.html") == "hi-from-web2"
        r = host.tophan("app", "exec", "web1", "--", "wget", "-qO-", "http://web2/index.html")
        assert r.returncode == 0 and r.stdout == "hi-from-web2\n", r.stderr
        assert host.tophan("app", "stop", "web2").returncode == 0
        r = host.tophan("app", "exec", "web1", "--", "cat", "/etc/hosts")
        assert "web1" in r.stdout and "web2" not in r.stdout, r.stdout
    finally:
        for app in ("web1", "web2"):
            host.tophan("app", "rm", "-f", app)
        subprocess.run(["ip", "netns", "del", name], check=False)
