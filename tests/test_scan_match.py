"""OSV matching against the real records in tests/data/osv (see its SOURCES.md for where each
comes from and which versions each affects): every range kind, withdrawn records, aliases,
binary -> source for dpkg, the distributions' ecosystems, PEP 503 names, apk's version order
(apk-tools' own vectors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scanlib import (
    ALPINE_318_OS_RELEASE,
    DATA,
    DEBIAN_9_OS_RELEASE,
    OSV,
    files,
    image,
    layer,
    stanza,
    status,
)
from tophan.scan import targets
from tophan.scan.inventory import Inventories
from tophan.scan.match import match, severity
from tophan.scan.model import Package
from tophan.scan.osv import Database, parse_record
from tophan.scan.versions import apk_compare, apk_valid
from tophan.store import Store

# SOURCES.md's "Suggested versions for tests": (type, name as installed, version) -> ids.
EXPECTED = [
    ("pypi", "urllib3", "1.24.1", "PYSEC-2019-132 PYSEC-2019-133 PYSEC-2020-148 PYSEC-2021-108 "
     "PYSEC-2023-192 PYSEC-2023-207 PYSEC-2023-212"),
    ("pypi", "urllib3", "1.25.8", "PYSEC-2020-148 PYSEC-2021-108 PYSEC-2023-192 PYSEC-2023-212"),
    ("pypi", "urllib3", "1.26.4", "PYSEC-2021-108 PYSEC-2023-192 PYSEC-2023-212"),
    ("pypi", "urllib3", "1.26.18", ""),
    ("pypi", "urllib3", "2.0.6", "PYSEC-2023-212"),
    ("pypi", "urllib3", "2.0.7", ""),
    ("pypi", "requests", "2.19.1", "PYSEC-2018-28 PYSEC-2023-74"),
    ("pypi", "requests", "2.30.0", "PYSEC-2023-74"),
    ("pypi", "requests", "2.31.0", ""),
    ("pypi", "Jinja2", "2.10", "PYSEC-2019-217 PYSEC-2021-66"),
    ("pypi", "Jinja2", "2.11.3", ""),
    ("pypi", "PyYAML", "5.3.1", "PYSEC-2021-142"),
    ("pypi", "PyYAML", "5.4", ""),
    ("pypi", "PyYAML", "6.0.1", ""),
    ("pypi", "Werkzeug", "2.2.2", "PYSEC-2023-221 PYSEC-2023-57 PYSEC-2023-58"),
    ("pypi", "Werkzeug", "2.3.8", ""),
    ("pypi", "Werkzeug", "3.0.0", "PYSEC-2023-221"),
    ("pypi", "Werkzeug", "3.0.1", ""),
    ("pypi", "py", "1.9.0", "PYSEC-2020-92 PYSEC-2022-42969"),
    ("pypi", "py", "1.11.0", "PYSEC-2022-42969"),
    ("npm", "lodash", "3.10.1", "GHSA-29mw-wpgm-hmr9 GHSA-35jh-r3h4-6jhm GHSA-4xc9-xhrj-v574 "
     "GHSA-fvqr-27wr-82fm GHSA-jf85-cpcp-j695 GHSA-p6mc-m468-83gw GHSA-x5rq-j2xg-h7qm"),
    ("npm", "lodash", "4.17.15", "GHSA-29mw-wpgm-hmr9 GHSA-35jh-r3h4-6jhm GHSA-p6mc-m468-83gw"),
    ("npm", "lodash", "4.17.20", "GHSA-29mw-wpgm-hmr9 GHSA-35jh-r3h4-6jhm"),
    ("npm", "lodash", "4.17.21", ""),
    ("npm", "lodash.trim", "4.5.1", "GHSA-29mw-wpgm-hmr9"),  # last_affected, inclusive
    ("npm", "lodash.trim", "4.5.2", ""),
    ("npm", "minimist", "0.0.8", "GHSA-vh95-rmgr-6w4m GHSA-xvch-5gv4-984h"),
    ("npm", "minimist", "1.2.5", "GHSA-xvch-5gv4-984h"),
    ("npm", "minimist", "1.2.6", ""),
    ("npm", "axios", "0.21.0", "GHSA-4w2v-q235-vp99 GHSA-cph5-m8f7-6c5x GHSA-wf5p-g6vw-rhxx"),
    ("npm", "axios", "0.21.1", "GHSA-cph5-m8f7-6c5x GHSA-wf5p-g6vw-rhxx"),
    ("npm", "axios", "1.7.2", "GHSA-8hc4-vh64-cxmj"),
    ("npm", "axios", "1.7.4", ""),
    ("npm", "node-fetch", "2.6.0", "GHSA-w7rc-rwvf-8q5r"),
    ("npm", "node-fetch", "2.6.1", ""),
    ("npm", "node-fetch", "3.0.0-beta.8", "GHSA-w7rc-rwvf-8q5r"),
    ("npm", "node-fetch", "3.0.0-beta.9", ""),
]  # fmt: skip


@pytest.fixture(scope="module")
def db() -> Database:
    return Database(str(OSV))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(str(tmp_path / "store"))


def ids(pkgs: list[Package], database: Database) -> list[str]:
    return sorted(f.id for f in match(pkgs, database))


@pytest.mark.parametrize(("kind", "name", "version", "want"), EXPECTED)
def test_sources_md_expectations(
    db: Database, kind: str, name: str, version: str, want: str
) -> None:
    eco = "PyPI" if kind == "pypi" else "npm"
    pkg = Package(kind, name, version, "/x", ecosystem=eco)
    assert ids([pkg], db) == sorted(want.split())


def test_database_reads_every_record_yaml_and_json(db: Database) -> None:
    assert db.warnings == []
    assert db.counts["PyPI"] == 34 and db.counts["npm"] == 14 and db.counts["Debian:9"] == 4
    assert db.total == 53


def test_fixed_and_severity_from_cvss_and_database(db: Database) -> None:
    (f,) = match([Package("pypi", "urllib3", "2.0.6", "/x", ecosystem="PyPI")], db)
    assert (f.id, f.fixed) == ("PYSEC-2023-212", "2.0.7")  # the second, unsorted segment
    lodash = {
        f.id: f for f in match([Package("npm", "lodash", "4.17.11", "/x", ecosystem="npm")], db)
    }
    # GHSA-jf85: CVSS:3.1/…/C:H/I:H/A:H = 9.1 by the cvss library.
    assert lodash["GHSA-jf85-cpcp-j695"].severity == "CRITICAL"
    assert lodash["GHSA-jf85-cpcp-j695"].score == pytest.approx(9.1)
    assert lodash["GHSA-jf85-cpcp-j695"].fixed == "4.17.12"
    # py's record has neither vectors nor a stated severity; last_affected: no fix.
    (py,) = match([Package("pypi", "py", "1.11.0", "/x", ecosystem="PyPI")], db)
    assert (py.severity, py.fixed) == ("UNKNOWN", "")


def test_cvss_v4_vector_and_database_severity_words() -> None:
    v4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
    rec = parse_record({"id": "X-1", "severity": [{"type": "CVSS_V4", "score": v4}]})
    assert rec is not None
    assert severity(rec, None) == ("CRITICAL", 9.3)
    rec = parse_record({"id": "X-2", "database_specific": {"severity": "MODERATE"}})
    assert rec is not None and severity(rec, None) == ("MEDIUM", None)
    rec = parse_record({"id": "X-3", "severity": [{"type": "CVSS_V3", "score": "garbage"}]})
    assert rec is not None and severity(rec, None) == ("UNKNOWN", None)


def _copy(tmp_path: Path, *names: str) -> Path:
    top = tmp_path / "db"
    top.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(OSV / n, top / Path(n).name)
    return top


def _edit(path: Path, change: dict[str, object]) -> None:
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))


def test_withdrawn_records_are_skipped(tmp_path: Path) -> None:
    top = _copy(tmp_path, "npm/GHSA-8hc4-vh64-cxmj.json")
    axios = Package("npm", "axios", "1.7.2", "/x", ecosystem="npm")
    assert ids([axios], Database(str(top))) == ["GHSA-8hc4-vh64-cxmj"]
    _edit(top / "GHSA-8hc4-vh64-cxmj.json", {"withdrawn": "2024-09-01T00:00:00Z"})
    assert ids([axios], Database(str(top))) == []


def test_aliases_fold_into_one_finding(tmp_path: Path) -> None:
    """PYSEC-2023-192 and the GHSA record it names as an alias: one finding, every id listed."""
    top = _copy(tmp_path, "PyPI/PYSEC-2023-192.yaml")
    import yaml

    doc = yaml.safe_load((OSV / "PyPI/PYSEC-2023-192.yaml").read_text())
    ghsa = {
        "id": "GHSA-v845-jxx5-vc9f",
        "aliases": ["CVE-2023-43804"],
        "modified": "2023-10-10T00:00:00Z",
        "affected": doc["affected"],
        "database_specific": {"severity": "HIGH"},
    }
    (top / "GHSA-v845-jxx5-vc9f.json").write_text(json.dumps(ghsa, default=str))
    found = match(
        [Package("pypi", "urllib3", "1.26.4", "/x", ecosystem="PyPI")], Database(str(top))
    )
    assert len(found) == 1
    assert found[0].id == "GHSA-v845-jxx5-vc9f"  # ids sorted: the first is primary
    assert set(found[0].aliases) == {"CVE-2023-43804", "PYSEC-2023-192"}
    assert found[0].fixed == "1.26.17"


def test_semver_ranges_limit_and_explicit_versions(tmp_path: Path) -> None:
    top = _copy(tmp_path, "npm/GHSA-w7rc-rwvf-8q5r.json")
    rec = top / "GHSA-w7rc-rwvf-8q5r.json"
    doc = json.loads(rec.read_text())
    for a in doc["affected"]:
        for r in a["ranges"]:
            r["type"] = "SEMVER"
    rec.write_text(json.dumps(doc))

    def hit(v: str) -> bool:
        pkg = Package("npm", "node-fetch", v, "/x", ecosystem="npm")
        return bool(match([pkg], Database(str(top))))

    assert hit("2.6.0") and hit("3.0.0-beta.8") and not hit("2.6.1") and not hit("1.9.9")
    # A limit above the second segment's introduced, below its fixed: cuts it short.
    doc["affected"][1]["ranges"][0]["events"].append({"limit": "3.0.0-beta.5"})
    rec.write_text(json.dumps(doc))
    assert hit("3.0.0-beta.4") and not hit("3.0.0-beta.6")
    # No ranges at all, only the explicit list: exact versions only.
    for a in doc["affected"]:
        a["ranges"] = []
        a["versions"] = ["2.5.0"]
    rec.write_text(json.dumps(doc))
    assert hit("2.5.0") and not hit("2.6.0")


def test_git_ranges_are_ignored_and_versions_list_agrees(db: Database) -> None:
    """PYSEC-2015-17 has GIT and ECOSYSTEM ranges and a versions list: same answers."""
    (rec,) = [r for r in db.records("PyPI", "requests") if r.id == "PYSEC-2015-17"]
    assert {t for t, _ in rec.affected[0].ranges} >= {"GIT", "ECOSYSTEM"}
    for v in rec.affected[0].versions:
        got = ids([Package("pypi", "requests", v, "/x", ecosystem="PyPI")], db)
        assert "PYSEC-2015-17" in got


def test_debian_binary_to_source_in_a_real_image(store: Store, db: Database) -> None:
    """Debian advisories name source packages: libssl1.1 (Source: openssl) is found by
    DLA-3008-1; the ecosystem Debian:9 comes from the image's os-release."""
    text = status(
        stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"),
        stanza("libxml2", "2.9.4+dfsg1-2.2+deb9u6"),
        stanza("dpkg", "1.18.26"),  # fixed
        stanza("tzdata", "2021a-0+deb9u3", arch="all"),
    )
    layer(
        store, "deb9", files({"/var/lib/dpkg/status": text, "/etc/os-release": DEBIAN_9_OS_RELEASE})
    )
    image(store, "deb9", ["deb9"])
    inv = Inventories(store).image(targets.image(store, "deb9").stack)
    assert inv.ecosystem == "Debian:9"
    found = {f.id: f for f in match(inv.packages, db)}
    assert sorted(found) == ["DLA-3008-1", "DLA-3012-1", "DLA-3051-1"]
    assert found["DLA-3008-1"].package == "libssl1.1" and found["DLA-3008-1"].source == "openssl"
    assert found["DLA-3008-1"].fixed == "1.1.0l-1~deb9u6"
    assert "CVE-2022-1292" in found["DLA-3008-1"].aliases  # Debian's `upstream`
    assert found["DLA-3051-1"].aliases == []


def test_alpine_origin_and_release_branch(store: Store, db: Database) -> None:
    installed = b"P:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\nP:musl-utils\nV:1.2.4-r3\no:musl\n\n"
    layer(
        store,
        "alp",
        files({"/lib/apk/db/installed": installed, "/etc/os-release": ALPINE_318_OS_RELEASE}),
    )
    image(store, "alp", ["alp"])
    inv = Inventories(store).image(targets.image(store, "alp").stack)
    assert inv.ecosystem == "Alpine:v3.18"
    found = match(inv.packages, db)
    assert [(f.package, f.id, f.fixed) for f in found] == [
        ("musl", "ALPINE-CVE-2025-26519", "1.2.4-r3")
    ]
    # The same version on v3.19 is before that branch's fix (1.2.4_git20230717-r5).
    pkg = Package("apk", "musl", "1.2.4-r3", "/x", source="musl", ecosystem="Alpine:v3.19")
    assert ids([pkg], db) == ["ALPINE-CVE-2025-26519"]
    pkg = Package(
        "apk", "musl", "1.2.4_git20230717-r5", "/x", source="musl", ecosystem="Alpine:v3.19"
    )
    assert ids([pkg], db) == []


def test_apk_version_order_by_apk_tools_vectors() -> None:
    lines = (DATA / "apk" / "version.data").read_text().splitlines()
    assert len(lines) > 70
    for line in lines:
        a, op, b = line.split()[:3]
        want = {"<": -1, "=": 0, ">": 1}[op]
        assert apk_compare(a, b) == want, line
        assert apk_compare(b, a) == -want, line
    assert apk_valid("1.2.4_git20230717-r5") and not apk_valid("23_foo") and not apk_valid("")


def test_hostile_records_are_skipped_with_a_warning(tmp_path: Path) -> None:
    top = _copy(tmp_path, "npm/GHSA-8hc4-vh64-cxmj.json")
    (top / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (top / "notarecord.json").write_text('{"affected": 3}')
    (top / "bad.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    (top / "huge.json").write_bytes(b" " * (17 << 20))
    (top / "weird.json").write_text(json.dumps({"id": "W-1", "affected": [
        {"package": {"ecosystem": "npm", "name": "axios"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "x" * 10_000}]}]},
        "junk", {"package": 5}]}))  # fmt: skip
    database = Database(str(top))
    assert len(database.warnings) == 4
    axios = Package("npm", "axios", "1.7.2", "/x", ecosystem="npm")
    assert ids([axios], database) == ["GHSA-8hc4-vh64-cxmj"]
