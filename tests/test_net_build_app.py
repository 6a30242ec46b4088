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
    """An app from a TOML spec with `network` and `ports`: reachable on the host's 127.0.0.1,
    healthy through its own namespace, shown by `app ps`, and gone without a trace on rm."""
    import json
    import time

    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("layer", "create", "bb", "--from", str(rootfs), root=root).rc == 0
    spec = tmp_path / "web.toml"
    spec.write_text(
        'layers = ["bb"]\n'
        'command = "echo hi-from-web > /tmp/index.html; exec httpd -f -p 80 -h /tmp"\n'
        'network = "private"\n'
        'ports = ["8080:80"]\n'
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
        assert ps[0]["network"] == "private" and ps[0]["ports"] == ["8080:80"]
        table = host.tophan("app", "ps").stdout.splitlines()
        assert "PORTS" in table[0] and "8080:80" in table[1]
        r = host.tophan("app", "rm", "-f", "web")
        assert r.returncode == 0, r.stderr
        host.assert_clean()
    finally:
        host.tophan("app", "rm", "-f", "web")
        subprocess.run(["ip", "netns", "del", name], check=False)
