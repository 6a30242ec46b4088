"""The deploy scan policy: `run --scan-policy`, `app start --scan-policy`, `scan.fail_on` in the
store's config.toml, an app's `scan_allow`; the last scan's findings or a fresh match; no scan
code loaded on a start without a policy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from scanlib import OSV, files, image, layer, real_tree
from tophan.store import Store

# urllib3 1.26.4, requests 2.19.1, Werkzeug 2.2.2, py 1.11.0 (tests/data/scan/pypi)
HIGH_OR_ABOVE = {"PYSEC-2023-192", "PYSEC-2023-221", "PYSEC-2023-57"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.init(str(tmp_path / "store"))
    layer(s, "py", files(real_tree("pypi", "/usr/lib/python3/dist-packages")))
    layer(s, "empty", files({"/etc/hostname": b"x\n"}))
    image(s, "py", ["py"])
    image(s, "clean", ["empty"])
    shutil.copytree(OSV / "PyPI", Path(s.root) / "scan" / "db")
    return s


def high_ids(store: Store) -> set[str]:
    r = run_cli("scan", "py", "--json", "--severity", "HIGH,CRITICAL", root=Path(store.root))
    return {v["id"] for v in json.loads(r.out)["vulnerabilities"]}


def test_run_refused_at_or_above_the_level(store: Store) -> None:
    root = Path(store.root)
    r = run_cli("run", "--scan-policy", "HIGH", "py", "--", "/nonexistent", root=root)
    assert r.rc == 125 and r.out == "" and r.err.count("\n") == 1
    assert "vulnerabilities at or above HIGH" in r.err and "scan_allow" in r.err
    assert all(i in r.err for i in high_ids(store))
    # Fresh match, stored: the next start reads the stored result.
    assert any((root / "scan" / "results").iterdir())
    # Below the level: the policy lets it through (and the command is then not found: 127).
    r = run_cli("run", "--scan-policy", "CRITICAL", "clean", "--", "/nonexistent", root=root)
    assert r.rc == 127, r.err
    r = run_cli("run", "--scan-policy", "SEVERE", "py", "--", "/x", root=root)
    assert r.rc == 125 and "unknown severity" in r.err


def test_store_config_sets_the_policy(store: Store) -> None:
    root = Path(store.root)
    (root / "config.toml").write_text('[scan]\nfail_on = "high"\n')
    r = run_cli("run", "py", "--", "/nonexistent", root=root)
    assert r.rc == 125 and "at or above HIGH" in r.err
    (root / "config.toml").write_text("[scan]\nfail_on = 3\n")
    r = run_cli("run", "py", "--", "/nonexistent", root=root)
    assert r.rc == 125 and "scan.fail_on: expected a string" in r.err and r.err.count("\n") == 1
    (root / "config.toml").write_text("[scan]\nfailon = 'HIGH'\n")
    r = run_cli("run", "py", "--", "/nonexistent", root=root)
    assert r.rc == 125 and "scan.failon: unknown key" in r.err


def test_app_start_policy_and_scan_allow(store: Store, tmp_path: Path) -> None:
    root = Path(store.root)
    # (network none: about the policy; no namespace is made as the host here)
    r = run_cli("app", "create", "web", "--network", "none", "py", "--", "/nonexistent", root=root)
    assert r.rc == 0, r.err
    try:
        r = run_cli("app", "start", "--scan-policy", "HIGH", "web", root=root)
        assert r.rc == 1 and "at or above HIGH" in r.err and r.err.count("\n") == 1
        spec = tmp_path / "web.toml"
        allowed = sorted(high_ids(store))
        spec.write_text(
            f'image = "py"\ncommand = ["/nonexistent"]\nnetwork = "none"\n'
            f"scan_allow = {json.dumps(allowed)}\n"
        )
        assert run_cli("app", "create", "web2", "--file", str(spec), root=root).rc == 0
        r = run_cli("app", "start", "--scan-policy", "HIGH", "web2", root=root)
        assert "at or above" not in r.err  # allowed: whatever happens next is not the policy's
        (inspect,) = json.loads(run_cli("app", "inspect", "web2", root=root).out)
        assert inspect["spec"]["scan_allow"] == allowed
    finally:
        for name in ("web", "web2"):
            run_cli("app", "stop", name, root=root)
            run_cli("app", "rm", "-f", name, root=root)


def test_no_policy_loads_no_scan_code(store: Store) -> None:
    code = (
        "import sys\n"
        "from tophan.cli.main import Cli\n"
        "from tophan.cli.run import _spec\n"
        "cli = Cli('tophan'); cli.root = sys.argv[1]\n"
        "_spec(cli, ['py', '--', '/nonexistent'])\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('tophan.scan', 'tomllib'))))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, store.root], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split("\n")[-2] == "", p.stdout + p.stderr
