"""`tophan sbom`: CycloneDX 1.6 and SPDX 2.3 JSON of an image's inventory, validated against the
official schemas (tests/data/sbom, see SOURCES.md); this machine's dpkg database as many
components as dpkg-query lists installed packages; layered images; purls for every ecosystem;
the same bytes for the same image; -o all or nothing; one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from conftest import run_cli
from scanlib import DATA, files, image, layer, real_tree, stanza, status, whiteout
from tophan.scan import sbom, targets
from tophan.store import Store

SCHEMAS = DATA / "sbom"
HOST_STATUS = Path("/var/lib/dpkg/status")
HOST_OS_RELEASE = Path("/etc/os-release")
CDX_SCHEMA_URI = "http://cyclonedx.org/schema/bom-1.6.schema.json"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z
SPDXID = re.compile(r"^SPDXRef-[A-Za-z0-9.-]+$")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(str(tmp_path / "store"))


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return doc


def cyclonedx_validator() -> jsonschema.Draft7Validator:
    """The official CycloneDX 1.6 schema: the library's copy, with the ``$schema`` enum it
    dropped put back (SOURCES.md), its two referenced schemas at the names it refers to."""
    bom = _schema("bom-1.6.SNAPSHOT.schema.json")
    bom["properties"]["$schema"]["enum"] = [CDX_SCHEMA_URI]
    base = "http://cyclonedx.org/schema/"
    registry: Registry[Any] = Registry().with_resources(
        (base + name, Resource.from_contents(_schema(name), default_specification=DRAFT7))
        for name in ("spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json")
    )
    return jsonschema.Draft7Validator(
        bom, registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def check_cyclonedx(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    cyclonedx_validator().validate(doc)
    assert doc["version"] == 1  # required by the official schema, dropped in the library's
    assert doc["specVersion"] == "1.6"
    refs = [c["bom-ref"] for c in doc.get("components", [])]
    assert len(refs) == len(set(refs))
    assert all(c.get("purl") for c in doc.get("components", []))
    return doc


def check_spdx(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    schema = _schema("spdx-schema-2.3.json")
    jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate(doc)
    # What the schema does not say but the specification does: identifiers' characters, unique
    # identifiers, relationships between elements that exist, an absolute namespace URI.
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert all(SPDXID.match(i) for i in ids) and len(ids) == len(set(ids))
    known = {*ids, "SPDXRef-DOCUMENT"}
    for r in doc["relationships"]:
        assert r["spdxElementId"] in known and r["relatedSpdxElement"] in known
    assert (
        re.match(r"^https://\S+$", doc["documentNamespace"]) and "#" not in doc["documentNamespace"]
    )
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", doc["creationInfo"]["created"])
    return doc


def make(store: Store, name: str, fmt: str, created: int = int(EPOCH)) -> bytes:
    data, _ = sbom.generate(store, targets.image(store, name), fmt, created=created)
    return data


def prop(component: dict[str, Any], name: str) -> str | None:
    return next((p["value"] for p in component.get("properties", []) if p["name"] == name), None)


def annotation(package: dict[str, Any], name: str) -> str | None:
    for a in package.get("annotations", []):
        key, _, value = a["comment"].partition("=")
        if key == name:
            return str(value)
    return None


def purl_ref(package: dict[str, Any]) -> str:
    refs = [r for r in package["externalRefs"] if r["referenceType"] == "purl"]
    assert len(refs) == 1 and refs[0]["referenceCategory"] == "PACKAGE-MANAGER"
    return str(refs[0]["referenceLocator"])


def dpkg_installed(status_file: Path, admin: Path) -> list[tuple[str, str, str]]:
    """(package, version, arch) of the installed packages (second letter of db:Status-Abbrev
    ``i``) that dpkg-query lists from ``status_file``."""
    admin.mkdir()
    (admin / "status").write_bytes(status_file.read_bytes())
    out = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-W",
         "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    return sorted((n, v, a) for abbrev, n, v, a in rows if abbrev[1:2] == "i")


def test_dpkg_components_equal_dpkg_query_and_validate(store: Store, tmp_path: Path) -> None:
    """This machine's real dpkg database and os-release in a layer: one deb component per
    package dpkg-query lists installed, with its version and arch, in both formats, each valid
    against its official schema."""
    if not HOST_STATUS.exists() or not HOST_OS_RELEASE.exists():
        pytest.skip("no dpkg database on this machine")
    base = files(
        {
            "/var/lib/dpkg/status": HOST_STATUS.read_bytes(),
            "/etc/os-release": HOST_OS_RELEASE.read_bytes(),
        }
    )
    digest = layer(store, "base", base)
    image(store, "host", ["base"])
    want = dpkg_installed(HOST_STATUS, tmp_path / "admin")
    assert len(want) > 50

    cdx = check_cyclonedx(make(store, "host", "cyclonedx"))
    debs = [c for c in cdx["components"] if c["purl"].startswith("pkg:deb/")]
    got = sorted((c["name"], c["version"], _qualifier(c["purl"], "arch")) for c in debs)
    assert got == want
    assert all(prop(c, sbom.LAYER_DIGEST) == digest for c in debs)
    distro = _qualifier(debs[0]["purl"], "distro")
    assert re.match(r"^debian-\d+$", distro) and all(
        c["purl"].startswith("pkg:deb/debian/") for c in debs
    )

    doc = check_spdx(make(store, "host", "spdx"))
    spdx_debs = [p for p in doc["packages"] if purl_ref(p).startswith("pkg:deb/")]
    assert len(spdx_debs) == len(want)
    assert sorted((p["name"], p["versionInfo"]) for p in spdx_debs) == sorted(
        (n, v) for n, v, _ in want
    )
    assert all(annotation(p, sbom.LAYER_DIGEST) == digest for p in spdx_debs)
    contained = {
        r["relatedSpdxElement"] for r in doc["relationships"] if r["relationshipType"] == "CONTAINS"
    }
    assert contained == {p["SPDXID"] for p in spdx_debs}


def _qualifier(purl: str, key: str) -> str:
    from packageurl import PackageURL

    return str(PackageURL.from_string(purl).qualifiers.get(key, ""))  # type: ignore[union-attr]


def test_layered_image_removed_and_upgraded(store: Store) -> None:
    """An upper layer purges a deb and upgrades another, removes one Python distribution and
    upgrades another: the removed are gone, the upgraded have the upper version and digest."""
    sp = "/usr/lib/python3/dist-packages"
    base = files({
        "/etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
        "/var/lib/dpkg/status": status(stanza("libssl3", "3.0.11-1~deb12u1", source="openssl"),
                                       stanza("tzdata", "2024a-0+deb12u1", arch="all"),
                                       stanza("dpkg", "1.21.22")),
        **real_tree("pypi", sp),
    })  # fmt: skip
    base_digest = layer(store, "base", base)
    upper = [
        *files({
            "/var/lib/dpkg/status": status(stanza("libssl3", "3.0.15-1~deb12u1", source="openssl"),
                                           stanza("dpkg", "1.21.22")),
            f"{sp}/urllib3-1.26.18.dist-info/METADATA":
                b"Metadata-Version: 2.1\nName: urllib3\nVersion: 1.26.18\n\nbody\n",
        }),
        whiteout(f"{sp}/urllib3-1.26.4.dist-info"),
        whiteout(f"{sp}/requests-2.19.1.dist-info"),
    ]  # fmt: skip
    upper_digest = layer(store, "upper", upper)
    image(store, "img", ["base", "upper"])

    cdx = check_cyclonedx(make(store, "img", "cyclonedx"))
    by = {c["name"]: c for c in cdx["components"]}
    assert "tzdata" not in by and "requests" not in by
    assert by["libssl3"]["version"] == "3.0.15-1~deb12u1"
    assert prop(by["libssl3"], sbom.LAYER_DIGEST) == upper_digest
    assert by["libssl3"]["purl"].endswith("&upstream=openssl")
    assert by["urllib3"]["version"] == "1.26.18"
    assert prop(by["urllib3"], sbom.LAYER_DIGEST) == upper_digest
    assert prop(by["Werkzeug"], sbom.LAYER_DIGEST) == base_digest  # untouched: the base's
    assert prop(by["dpkg"], sbom.LAYER_DIGEST) == upper_digest  # the status file it is read from
    subject = cdx["metadata"]["component"]
    assert subject["type"] == "container" and subject["name"] == "img:latest"
    manifest = targets.image(store, "img").digest
    assert subject["version"] == manifest and subject["purl"].startswith("pkg:oci/img@sha256")
    assert prop(subject, "tophan:image:layer:0") == base_digest
    assert prop(subject, "tophan:image:layer:1") == upper_digest

    doc = check_spdx(make(store, "img", "spdx"))
    spdx_by = {p["name"]: p for p in doc["packages"]}
    assert "tzdata" not in spdx_by and "requests" not in spdx_by
    assert spdx_by["libssl3"]["versionInfo"] == "3.0.15-1~deb12u1"
    assert annotation(spdx_by["libssl3"], sbom.LAYER_DIGEST) == upper_digest
    assert upper_digest in spdx_by["libssl3"]["sourceInfo"]
    assert spdx_by["img:latest"]["primaryPackagePurpose"] == "CONTAINER"
    assert spdx_by["img:latest"]["versionInfo"] == manifest


def test_purls_of_every_ecosystem(store: Store) -> None:
    """deb (with upstream), apk (a real apk database, origin as upstream), PyPI (PEP 503 name),
    npm (a scope percent-encoded; a scope is CycloneDX's group)."""
    debian = files({
        "/etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
        "/var/lib/dpkg/status": status(stanza("libssl3", "3.0.11-1~deb12u2", source="openssl"),
                                       stanza("bash", "5.2.15-2+b2", source="bash (5.2.15-2)")),
        **real_tree("pypi", "/usr/lib/python3/dist-packages"),
        **real_tree("npm", "/srv/web/node_modules"),
    })  # fmt: skip
    layer(store, "debian", debian)
    image(store, "deb", ["debian"])
    cdx = check_cyclonedx(make(store, "deb", "cyclonedx"))
    purls = {c["purl"] for c in cdx["components"]}
    assert {
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl",
        # a binNMU: its source has the same name (no upstream), its version is a property
        "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
        "pkg:pypi/werkzeug@2.2.2",
        "pkg:pypi/crit@3.17.1",
        "pkg:npm/%40babel/code-frame@7.0.0",
        "pkg:npm/lodash@4.17.15",
    } <= purls
    bash = next(c for c in cdx["components"] if c["name"] == "bash")
    assert prop(bash, sbom.SOURCE_VERSION) == "5.2.15-2" and prop(bash, sbom.SOURCE_NAME) is None
    scoped = next(c for c in cdx["components"] if c["purl"].startswith("pkg:npm/%40babel/"))
    assert (scoped["group"], scoped["name"]) == ("@babel", "code-frame")
    doc = check_spdx(make(store, "deb", "spdx"))
    assert {purl_ref(p) for p in doc["packages"][1:]} == purls

    alpine = files({
        "/etc/alpine-release": b"3.14.2\n",
        "/lib/apk/db/installed": (SCHEMAS / "apk" / "installed").read_bytes(),
    })  # fmt: skip
    layer(store, "alpine", alpine)
    image(store, "alp", ["alpine"])
    cdx = check_cyclonedx(make(store, "alp", "cyclonedx"))
    assert sorted(c["purl"] for c in cdx["components"]) == [
        "pkg:apk/alpine/libssl1.1@1.1.1k-r0?arch=armv7&distro=alpine-3.14&upstream=openssl",
        "pkg:apk/alpine/musl@1.2.2-r3?arch=armv7&distro=alpine-3.14",
    ]
    check_spdx(make(store, "alp", "spdx"))


def test_the_same_package_twice_is_two_components(store: Store) -> None:
    """One npm package at two places (nested node_modules): two components, told apart."""
    minimist = (DATA / "scan/npm/minimist/package.json").read_bytes()
    layer(store, "base", files({
        "/app/node_modules/minimist/package.json": minimist,
        "/app/node_modules/axios/node_modules/minimist/package.json": minimist,
    }))  # fmt: skip
    image(store, "img", ["base"])
    cdx = check_cyclonedx(make(store, "img", "cyclonedx"))
    assert [c["purl"] for c in cdx["components"]] == ["pkg:npm/minimist@1.2.5"] * 2
    doc = check_spdx(make(store, "img", "spdx"))
    assert len(doc["packages"]) == 3


def test_reproducible(store: Store) -> None:
    """The same image: the same bytes at the same time; only the time-derived fields differ at
    another. A second image over the same layers differs only where its name and digest show."""
    layer(store, "base", files(real_tree("npm", "/app/node_modules")))
    image(store, "img", ["base"])
    for fmt in sbom.FORMATS:
        first = make(store, "img", fmt, created=1700000000)
        assert make(store, "img", fmt, created=1700000000) == first
        later = make(store, "img", fmt, created=1800000000)
        assert later != first
        assert _timeless(later) == _timeless(first)


def _timeless(data: bytes) -> str:
    """The document with its creation time and the identifiers derived from it blanked."""
    text = data.decode()
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|\+00:00)", "TIME", text)
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", text)


def test_cli_formats_layers_output_and_source_date_epoch(store: Store, tmp_path: Path) -> None:
    """The command: stdout or -o FILE (atomic: a failed write leaves the old file), -l layers
    (top first), $SOURCE_DATE_EPOCH as the creation time; stderr empty on success."""
    root = Path(store.root)
    layer(store, "base", files(real_tree("pypi", "/usr/lib/python3/dist-packages")))
    layer(store, "app", files(real_tree("npm", "/app/node_modules")))
    image(store, "img", ["base", "app"])
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}

    r = run_cli("sbom", "img", root=root, env=env)
    assert r.rc == 0 and r.err == ""
    cdx = check_cyclonedx(r.outb)
    assert cdx["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    out = tmp_path / "img.spdx.json"
    r = run_cli("sbom", "img", "--format", "spdx", "-o", str(out), root=root, env=env)
    assert r.rc == 0 and r.out == "" and r.err == ""
    doc = check_spdx(out.read_bytes())
    assert doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    assert out.read_bytes() == make(store, "img", "spdx")  # the library's bytes, as given

    # -o replaces the file by a rename: a hard link to the old one still holds the old bytes,
    # and a command that fails leaves the file as it was; no temporary is left behind.
    spdx_bytes = out.read_bytes()
    os.link(out, tmp_path / "old-link")
    r = run_cli("sbom", "img", "-o", str(out), root=root, env=env)  # CycloneDX this time
    assert r.rc == 0 and (tmp_path / "old-link").read_bytes() == spdx_bytes
    check_cyclonedx(out.read_bytes())
    assert out.stat().st_ino != (tmp_path / "old-link").stat().st_ino
    before = out.read_bytes()
    r = run_cli("sbom", "nosuch", "-o", str(out), root=root, env=env)
    assert r.rc == 1 and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.spdx.json", "old-link", "store"]

    # -l, top first: the same packages as the image, its subject the layers.
    r = run_cli("sbom", "-l", "app", "-l", "base", root=root, env=env)
    assert r.rc == 0
    layers_doc = check_cyclonedx(r.outb)
    assert [c["purl"] for c in layers_doc["components"]] == [c["purl"] for c in cdx["components"]]
    assert layers_doc["metadata"]["component"]["name"] == "-l app -l base"
    assert "purl" not in layers_doc["metadata"]["component"]

    # -o into a directory that is not there: a one-line error, nothing written anywhere.
    r = run_cli("sbom", "img", "-o", str(tmp_path / "missing" / "x.json"), root=root, env=env)
    assert r.rc == 1 and r.out == "" and r.err.count("\n") == 1
    assert "cannot write" in r.err and not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("args", "env", "rc", "words"),
    [
        (["sbom"], {}, 2, "give an image or -l"),
        (["sbom", "img", "-l", "base"], {}, 2, "not both"),
        (["sbom", "img", "--format", "swid"], {}, 2, "unknown --format"),
        (["sbom", "img", "--bogus"], {}, 2, "unknown option --bogus"),
        (["sbom", "img", "-o"], {}, 2, "-o needs a value"),
        (["sbom", "nosuch"], {}, 1, "nosuch"),
        (["sbom", "-l", "nosuch"], {}, 1, "nosuch"),
        (["sbom", "img"], {"SOURCE_DATE_EPOCH": "yesterday"}, 2, "SOURCE_DATE_EPOCH"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    store: Store, args: list[str], env: dict[str, str], rc: int, words: str
) -> None:
    layer(store, "base", files({"/etc/os-release": b"ID=debian\n"}))
    image(store, "img", ["base"])
    r = run_cli(*args, root=Path(store.root), env={**os.environ, **env})
    assert r.rc == rc, r.err
    assert r.out == "" and r.err.startswith("tophan: ") and r.err.count("\n") == 1
    assert words in r.err and "Traceback" not in r.err


def test_help_and_lean_start(store: Store) -> None:
    """`sbom --help` answers; other commands never load the SBOM libraries."""
    r = run_cli("sbom", "--help", root=Path(store.root))
    assert r.rc == 0 and "cyclonedx" in r.err and "SOURCE_DATE_EPOCH" in r.err
    code = (
        "import sys\n"
        "from tophan.cli.main import main\n"
        "main(['--root', sys.argv[1], 'layer', 'list'])\n"
        "prefixes = ('cyclonedx', 'packageurl', 'jsonschema', 'tophan.scan')\n"
        "print(' '.join(m for m in sys.modules if m.startswith(prefixes)))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, store.root], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split("\n")[-2] == "", p.stdout + p.stderr
