"""`tophan scan` end to end on real package files and the real OSV records: the table, --json's
exact shape, SARIF 2.1.0, --severity, --fail-on's exit code, ignore files (with expiry),
`scan --all` storing results per image, and one-line errors."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from scanlib import (
    DEBIAN_9_OS_RELEASE,
    OSV,
    files,
    image,
    layer,
    real_tree,
    stanza,
    status,
    whiteout,
)
from tophan.scan import report
from tophan.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.init(str(tmp_path / "store"))
    deb = status(stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"))
    layer(s, "base", files({"/var/lib/dpkg/status": deb, "/etc/os-release": DEBIAN_9_OS_RELEASE}))
    py = real_tree("pypi", "/usr/lib/python3/dist-packages")
    layer(s, "py", files(py))
    layer(s, "js", files(real_tree("npm", "/app/node_modules")))
    image(s, "app", ["base", "py", "js"])
    image(s, "plain", ["base"])
    return s


def scan(store: Store, *args: str) -> tuple[int, str, str]:
    r = run_cli("scan", *args, "--db", str(OSV), root=Path(store.root))
    assert "Traceback" not in r.err
    return r.rc, r.out, r.err


def test_json_exact_shape_and_real_findings(store: Store) -> None:
    rc, out, err = scan(store, "app", "--json")
    assert rc == 0 and err == ""
    doc = json.loads(out)
    assert list(doc) == ["vulnerabilities"]
    keys = {"id", "aliases", "package", "version", "ecosystem", "fixed", "severity", "layer"}
    assert all(set(v) == keys for v in doc["vulnerabilities"])
    got = {(v["package"], v["id"]) for v in doc["vulnerabilities"]}
    assert ("libssl1.1", "DLA-3008-1") in got  # binary -> source
    assert ("urllib3", "PYSEC-2023-212") in got and ("Werkzeug", "PYSEC-2023-221") in got
    assert ("lodash", "GHSA-p6mc-m468-83gw") in got and ("node-fetch", "GHSA-w7rc-rwvf-8q5r") in got
    layers = {v["package"]: v["layer"] for v in doc["vulnerabilities"]}
    assert layers["libssl1.1"] != layers["urllib3"] != layers["lodash"]
    (dla,) = [v for v in doc["vulnerabilities"] if v["id"] == "DLA-3008-1"]
    assert dla["ecosystem"] == "Debian:9" and dla["fixed"] == "1.1.0l-1~deb9u6"
    assert "CVE-2022-1292" in dla["aliases"]


def test_table_severity_filter_and_fail_on(store: Store) -> None:
    rc, out, _ = scan(store, "app")
    assert rc == 0
    head = out.splitlines()[0].split()
    assert head == ["PACKAGE", "INSTALLED", "FIXED", "IN", "ID", "SEVERITY", "LAYER"]
    assert "DLA-3008-1" in out and "1.1.0l-1~deb9u6" in out
    rc, out, _ = scan(store, "app", "--severity", "critical", "--json")
    sevs = {v["severity"] for v in json.loads(out)["vulnerabilities"]}
    assert sevs == {"CRITICAL"}
    assert scan(store, "app", "--fail-on", "CRITICAL")[0] == 1
    # Only UNKNOWN findings (Debian states no severity here): nothing at or above LOW.
    rc, out, _ = scan(store, "plain", "--fail-on", "LOW")
    assert rc == 0 and "DLA-3008-1" in out
    assert scan(store, "plain", "--fail-on", "UNKNOWN")[0] == 1


def test_ignore_file_ids_aliases_comments_and_expiry(store: Store, tmp_path: Path) -> None:
    today = datetime.date.today()
    past, future = today - datetime.timedelta(days=2), today + datetime.timedelta(days=30)
    ig = tmp_path / ".tophanignore"
    ig.write_text(
        "# accepted risks\n"
        "CVE-2022-1292   # an alias of DLA-3008-1\n"
        f"PYSEC-2023-212 exp:{future}\n"
        f"PYSEC-2023-192 exp:{past}\n"
    )
    _, out, _ = scan(store, "app", "--json", "--ignore-file", str(ig))
    ids = {v["id"] for v in json.loads(out)["vulnerabilities"]}
    assert "DLA-3008-1" not in ids and "PYSEC-2023-212" not in ids
    assert "PYSEC-2023-192" in ids  # its exception expired
    ig.write_text("X exp:tomorrow\n")
    r = run_cli("scan", "app", "--db", str(OSV), "--ignore-file", str(ig), root=Path(store.root))
    assert r.rc == 2 and "exp:YYYY-MM-DD" in r.err and r.err.count("\n") == 1


def test_sarif_required_structure(store: Store) -> None:
    rc, out, _ = scan(store, "app", "--sarif")
    assert rc == 0
    doc = json.loads(out)
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    # The properties SARIF 2.1.0's schema allows on each object emitted (its definitions set
    # additionalProperties false; oasis-tcs/sarif-spec Schemata/sarif-schema-2.1.0.json).
    assert set(doc) <= {"$schema", "version", "runs", "inlineExternalProperties", "properties"}
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert set(driver) <= {"name", "version", "informationUri", "rules", "fullName", "properties"}
    for rule in driver["rules"]:
        assert set(rule) <= {"id", "shortDescription", "helpUri", "defaultConfiguration",
                             "properties", "fullDescription", "name", "help"}  # fmt: skip
        assert rule["shortDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("none", "note", "warning", "error")
    for res in run["results"]:
        assert set(res) <= {"ruleId", "level", "message", "locations", "properties"}
        assert set(res["locations"][0]) <= {"physicalLocation", "message"}
    assert driver["name"] == "tophan"
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids)) > 5
    for res in run["results"]:
        assert res["ruleId"] in rule_ids and res["message"]["text"]
        assert res["level"] in ("error", "warning", "note")
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert not uri.startswith("/")


def test_layers_and_a_zip_database(store: Store, tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "npm.zip", "w") as zf:
        for p in (OSV / "npm").iterdir():
            zf.write(p, p.name)
    r = run_cli(
        "scan", "-l", "js", "--db", str(tmp_path / "npm.zip"), "--json", root=Path(store.root)
    )
    assert r.rc == 0, r.err
    got = {(v["package"], v["version"]) for v in json.loads(r.out)["vulnerabilities"]}
    assert got == {("lodash", "4.17.15"), ("axios", "0.21.1"), ("minimist", "1.2.5"),
                   ("node-fetch", "3.0.0-beta.8")}  # fmt: skip


def test_scan_all_stores_results_per_image(store: Store) -> None:
    rc, out, _ = scan(store, "--all")
    assert rc == 0
    assert {line.split("\t")[0] for line in out.splitlines()} == {"app:latest", "plain:latest"}
    doc = report.last(store, store.images.get("plain").digest)
    assert doc is not None and doc["counts"]["UNKNOWN"] == 1
    assert report.vulns_column(doc) == "C:0 H:0 M:0 L:0"
    app = report.last(store, store.images.get("app").digest)
    assert app is not None and report.vulns_column(app).startswith("C:")
    assert report.vulns_column(None) == "-"
    results = Path(store.root) / "scan" / "results"
    assert not [p for p in results.iterdir() if not p.name.endswith(".json")]  # no temporaries


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["app", "--fail-on", "SEVERE"], "unknown severity"),
        (["app", "--severity", ","], "no severity"),
        (["app", "--json", "--sarif"], "not both"),
        ([], "give one of"),
        (["app", "--all"], "give one of"),
        (["nosuch"], "nosuch"),
        (["app", "--ignore-file", "/nonexistent"], "ignore file"),
    ],
)
def test_bad_arguments_are_one_line_errors(store: Store, args: list[str], words: str) -> None:
    r = run_cli("scan", *args, "--db", str(OSV), root=Path(store.root))
    assert r.rc in (1, 2) and r.out == ""
    assert r.err.startswith("tophan: ") and r.err.count("\n") == 1 and words in r.err


def test_no_database_says_what_to_do(store: Store) -> None:
    r = run_cli("scan", "app", root=Path(store.root))
    assert r.rc == 1 and "tophan db update" in r.err and r.err.count("\n") == 1


def test_app_ps_vulns_column(store: Store) -> None:
    root = Path(store.root)
    r = run_cli("app", "create", "web", "plain", "--", "true", root=root)
    assert r.rc == 0, r.err
    ps = run_cli("app", "ps", "-a", root=root).out.splitlines()
    col = ps[0].index("VULNS")
    assert ps[0].split()[-2:] == ["VULNS", "STACK"] and ps[1][col:].startswith("-  ")
    assert scan(store, "--all")[0] == 0
    ps = run_cli("app", "ps", "-a", root=root).out.splitlines()
    assert ps[1][col:].startswith("C:0 H:0 M:0 L:0")
    (row,) = json.loads(run_cli("app", "ps", "-a", "--json", root=root).out)
    assert row["vulns"] == "C:0 H:0 M:0 L:0"
    run_cli("app", "rm", "web", root=root)


def test_build_scan_and_fail_on(tmp_path: Path) -> None:
    """`build --scan` scans what it built against the store's database (here: the Debian records
    placed where `db update` puts them); --fail-on sets the exit code; no database fails fast."""
    root = tmp_path / "bstore"
    Store.init(str(root))
    ctx = tmp_path / "ctx"
    (ctx / "var/lib/dpkg").mkdir(parents=True)
    (ctx / "etc").mkdir()
    (ctx / "var/lib/dpkg/status").write_bytes(
        status(stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"))
    )
    (ctx / "etc/os-release").write_bytes(DEBIAN_9_OS_RELEASE)
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY var /var\nCOPY etc /etc\n")
    r = run_cli("build", "-t", "deb", "--scan", str(ctx), root=root)
    assert r.rc == 1 and "tophan db update" in r.err and r.out == ""
    assert "STEP" not in r.out  # failed before building
    shutil.copytree(OSV / "Debian", root / "scan" / "db")
    r = run_cli("build", "-t", "deb", "--scan", str(ctx), root=root)
    assert r.rc == 0, r.err
    assert "\nbuilt sha256:" in r.out and "DLA-3008-1" in r.out
    r = run_cli("build", "-t", "deb", "--scan", "--fail-on", "unknown", str(ctx), root=root)
    assert r.rc == 1 and "DLA-3008-1" in r.out
    r = run_cli("build", "-t", "deb", "--fail-on", "HIGH", str(ctx), root=root)
    assert r.rc == 2 and "needs --scan" in r.err
    digest = Store(str(root)).images.get("deb").digest
    assert report.last(Store(str(root)), digest) is not None


def test_upgraded_and_removed_in_upper_layers(store: Store) -> None:
    """An upper layer upgrading urllib3 (old dist-info whited out, a fixed one added) and
    removing Werkzeug: their findings go; what the lower layer still shows stays."""
    dist = "usr/lib/python3/dist-packages"
    meta = (Path(__file__).parent / "data/scan/pypi/urllib3-1.26.4.dist-info/METADATA").read_text()
    fixed = meta.replace("Version: 1.26.4", "Version: 1.26.18").encode()
    layer(
        store,
        "upgrade",
        [
            *files({f"/{dist}/urllib3-1.26.18.dist-info/METADATA": fixed}),
            whiteout(f"/{dist}/urllib3-1.26.4.dist-info"),
            whiteout(f"/{dist}/Werkzeug-2.2.2.dist-info"),
        ],
    )
    image(store, "upgraded", ["base", "py", "upgrade"])
    _, out, _ = scan(store, "upgraded", "--json")
    got = {(v["package"], v["version"]) for v in json.loads(out)["vulnerabilities"]}
    assert not any(p in ("urllib3", "Werkzeug") for p, _ in got)
    assert ("requests", "2.19.1") in got and ("libssl1.1", "1.1.0l-1~deb9u5") in got
