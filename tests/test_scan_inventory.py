"""Package inventories per layer, cached by digest, merged per image in stack order: real dpkg,
dist-info/egg-info and package.json files; layers that remove or upgrade what a lower one has;
hostile layers (symlinks out of the tree, absurd files)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scanlib import (
    DEBIAN_9_OS_RELEASE,
    files,
    image,
    layer,
    opaque,
    real_tree,
    stanza,
    status,
    sym,
    whiteout,
)
from tarbuild import d, f
from tophan.scan import inventory as inv_mod
from tophan.scan import targets
from tophan.scan.inventory import Inventories
from tophan.store import Store

HOST_STATUS = Path("/var/lib/dpkg/status")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(str(tmp_path / "store"))


def inventory(store: Store, name: str) -> list[tuple[str, str, str]]:
    got = Inventories(store).image(targets.image(store, name).stack)
    return [(p.type, p.name, p.version) for p in got.packages]


def test_dpkg_count_equals_dpkg_query_of_the_same_database(store: Store, tmp_path: Path) -> None:
    """This machine's real dpkg database in a layer: as many components as dpkg-query lists
    installed packages, each with its version and source."""
    if not HOST_STATUS.exists():
        pytest.skip("no dpkg database on this machine")
    data = HOST_STATUS.read_bytes()
    os_release = Path("/usr/lib/os-release").read_bytes()
    base = files({"/var/lib/dpkg/status": data, "/usr/lib/os-release": os_release})
    layer(store, "base", [*base, sym("etc/os-release", "../usr/lib/os-release")])
    image(store, "host", ["base"])
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "status").write_bytes(data)
    out = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-W",
         "-f", "${db:Status-Status}\t${Package}\t${Version}\t${source:Package}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    want = sorted(
        (name, version, src)
        for state, name, version, src in (line.split("\t") for line in out.splitlines())
        if state == "installed"
    )
    got = Inventories(store).image(targets.image(store, "host").stack)
    debs = sorted((p.name, p.version, p.source) for p in got.packages if p.type == "deb")
    assert len(debs) == len(want) > 50
    assert debs == want
    assert got.distro == "debian" and got.ecosystem.startswith("Debian:")
    assert all(p.ecosystem == got.ecosystem for p in got.packages if p.type == "deb")


def test_only_installed_packages_count_and_binaries_map_to_sources(store: Store) -> None:
    text = status(
        stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"),
        stanza("libfoo1", "1.0-1+b1", source="foo (1.0-1)"),  # a binNMU: its source's version
        stanza("gone", "1.0", status="deinstall ok config-files"),
        stanza("half", "2.0", status="install reinstreq half-installed"),
        stanza("held", "3.0", status="hold ok installed"),
    )
    layer(
        store, "base", files({"/var/lib/dpkg/status": text, "/etc/os-release": DEBIAN_9_OS_RELEASE})
    )
    image(store, "img", ["base"])
    got = Inventories(store).image(targets.image(store, "img").stack)
    by = {p.name: p for p in got.packages}
    assert sorted(by) == ["held", "libfoo1", "libssl1.1"]
    assert (by["libssl1.1"].match_name, by["libssl1.1"].match_version) == (
        "openssl",
        "1.1.0l-1~deb9u5",
    )
    assert (by["libfoo1"].match_name, by["libfoo1"].match_version) == ("foo", "1.0-1")
    assert by["libfoo1"].version == "1.0-1+b1"
    assert got.ecosystem == "Debian:9"
    assert by["libssl1.1"].purl == (
        "pkg:deb/debian/libssl1.1@1.1.0l-1~deb9u5?arch=amd64&distro=debian-9&upstream=openssl"
    )


def test_distroless_status_d(store: Store) -> None:
    """Distroless images: one file per package in status.d, no Status field, md5sums beside."""
    layer(store, "base", files({
        "/var/lib/dpkg/status.d/base-files":
            stanza("base-files", "12.4+deb12u5", status="").encode(),
        "/var/lib/dpkg/status.d/base-files.md5sums": b"0123  etc/debian_version\n",
        "/var/lib/dpkg/status.d/libssl3": stanza("libssl3", "3.0.11-1~deb12u2", source="openssl",
                                                 status="").encode(),
        "/etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
    }))  # fmt: skip
    image(store, "img", ["base"])
    assert inventory(store, "img") == [
        ("deb", "base-files", "12.4+deb12u5"),
        ("deb", "libssl3", "3.0.11-1~deb12u2"),
    ]


def test_python_distributions_anywhere(store: Store) -> None:
    """Real METADATA / PKG-INFO files: a venv under /app, Debian's dist-packages (an egg-info
    directory and an egg-info file), vendored dist-infos inside a package."""
    entries = {
        **real_tree("pypi", "/app/venv/lib/python3.11/site-packages"),
    }
    layer(store, "base", files(entries))
    image(store, "img", ["base"])
    got = Inventories(store).image(targets.image(store, "img").stack)
    names = sorted((p.name, p.version) for p in got.packages if p.type == "pypi")
    assert names == [
        ("PyJWT", "2.6.0"),
        ("Werkzeug", "2.2.2"),
        ("apipkg", "2.0.0"),
        ("crit", "3.17.1"),
        ("iniconfig", "1.1.1"),
        ("py", "1.11.0"),
        ("requests", "2.19.1"),
        ("urllib3", "1.26.4"),
    ]
    assert all(p.ecosystem == "PyPI" for p in got.packages)
    werkzeug = next(p for p in got.packages if p.name == "Werkzeug")
    assert werkzeug.match_name == "werkzeug" and werkzeug.purl == "pkg:pypi/werkzeug@2.2.2"


def test_npm_nested_scoped_and_private(store: Store) -> None:
    entries = {
        **real_tree("npm", "/srv/web/node_modules"),
        # nested: a dependency's own node_modules
        "/srv/web/node_modules/axios/node_modules/minimist/package.json":
            (Path(__file__).parent / "data/scan/npm/minimist/package.json").read_bytes(),
        # a workspace package: private, no version -> not a dependency
        "/srv/web/node_modules/internal/package.json": b'{"name": "internal", "private": true}',
        # the application's own manifest is not under node_modules
        "/srv/web/package.json": b'{"name": "web", "version": "1.0.0"}',
        # not manifests: a package's test fixture, a dot-dir
        "/srv/web/node_modules/lodash/test/package.json": b'{"name": "x", "version": "1.0.0"}',
        "/srv/web/node_modules/.cache/package.json": b'{"name": "y", "version": "1.0.0"}',
    }  # fmt: skip
    layer(store, "base", files(entries))
    image(store, "img", ["base"])
    got = Inventories(store).image(targets.image(store, "img").stack)
    pkgs = sorted((p.name, p.version, p.path) for p in got.packages)
    assert [(n, v) for n, v, _ in pkgs] == [
        ("@babel/code-frame", "7.0.0"),
        ("axios", "0.21.1"),
        ("lodash", "4.17.15"),
        ("minimist", "1.2.5"),
        ("minimist", "1.2.5"),
        ("node-fetch", "3.0.0-beta.8"),
    ]
    scoped = next(p for p in got.packages if p.name == "@babel/code-frame")
    assert scoped.purl == "pkg:npm/%40babel/code-frame@7.0.0"


def test_upper_layers_remove_and_upgrade(store: Store) -> None:
    """dpkg: an upper status drops one package and upgrades another; Python: a whiteout removes
    a dist-info, a new one upgrades; npm: an opaque node_modules replaces all below it."""
    sp = "/usr/lib/python3/dist-packages"
    base = files({
        "/etc/os-release": DEBIAN_9_OS_RELEASE,
        "/var/lib/dpkg/status": status(stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"),
                                       stanza("tzdata", "2021a-0+deb9u3", arch="all"),
                                       stanza("dpkg", "1.18.25")),
        **real_tree("pypi", sp),
        **real_tree("npm", "/app/node_modules"),
    })  # fmt: skip
    layer(store, "base", base)
    upper = [
        *files(
            {
                "/var/lib/dpkg/status": status(
                    stanza("libssl1.1", "1.1.0l-1~deb9u6", source="openssl"),
                    stanza("dpkg", "1.18.25"),
                ),
                f"{sp}/urllib3-1.26.18.dist-info/METADATA": (
                    b"Metadata-Version: 2.1\nName: urllib3\nVersion: 1.26.18\n\nbody\n"
                ),
                "/app/node_modules/lodash/package.json": b'{"name":"lodash","version":"4.17.21"}',
            }
        ),
        whiteout(f"{sp}/urllib3-1.26.4.dist-info"),
        whiteout(f"{sp}/requests-2.19.1.dist-info"),
        opaque("/app/node_modules"),
    ]
    upper_digest = layer(store, "upper", upper)
    image(store, "img", ["base", "upper"])
    got = Inventories(store).image(targets.image(store, "img").stack)
    by = {(p.type, p.name): p for p in got.packages}
    assert by[("deb", "libssl1.1")].version == "1.1.0l-1~deb9u6"
    assert by[("deb", "libssl1.1")].layer == upper_digest
    assert ("deb", "tzdata") not in by  # purged in the upper layer
    assert by[("pypi", "urllib3")].version == "1.26.18"
    assert ("pypi", "requests") not in by
    assert by[("pypi", "Werkzeug")].version == "2.2.2"  # untouched: still the base layer's
    assert by[("pypi", "Werkzeug")].layer != upper_digest
    assert [p.name for p in got.packages if p.type == "npm"] == ["lodash"]
    assert by[("npm", "lodash")].version == "4.17.21"
    # the base alone still has everything
    base_only = Inventories(store).image([targets.image(store, "img").stack[0]])
    assert {p.name for p in base_only.packages} >= {"tzdata", "requests", "axios"}


def test_a_file_replaced_by_a_directory_or_a_file_above_hides_it(store: Store) -> None:
    sp = "/usr/lib/python3/dist-packages"
    layer(store, "base", files(real_tree("pypi", sp)))
    # the upper layer makes dist-packages a symlink: everything below it is hidden
    layer(store, "upper", [d("usr"), d("usr/lib"), d("usr/lib/python3"),
                           sym("usr/lib/python3/dist-packages", "/opt/elsewhere")])  # fmt: skip
    image(store, "img", ["base", "upper"])
    assert inventory(store, "img") == []


def test_inventory_cached_by_digest_shared_across_images(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images over the same base: the base is read once, ever; a new Inventories (another
    process) finds it on disk and reads no layer at all."""
    text = status(stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"))
    base = layer(
        store, "base", files({"/var/lib/dpkg/status": text, "/etc/os-release": DEBIAN_9_OS_RELEASE})
    )
    layer(
        store,
        "app1",
        files(
            {"/srv/a/node_modules/minimist/package.json": b'{"name":"minimist","version":"1.2.5"}'}
        ),
    )
    layer(
        store,
        "app2",
        files(
            {"/srv/b/node_modules/lodash/package.json": b'{"name":"lodash","version":"4.17.15"}'}
        ),
    )
    image(store, "one", ["base", "app1"])
    image(store, "two", ["base", "app2"])
    reads: list[str] = []
    real = inv_mod.read_layer

    def counting(digest: str, root: str, ns: str | None) -> inv_mod.LayerInventory:
        reads.append(digest)
        return real(digest, root, ns)

    monkeypatch.setattr(inv_mod, "read_layer", counting)
    first = Inventories(store)
    first.image(targets.image(store, "one").stack)
    assert reads.count(base) == 1
    got = first.image(targets.image(store, "two").stack)
    assert reads.count(base) == 1 and len(reads) == 3
    assert {p.name for p in got.packages} == {"libssl1.1", "lodash"}
    assert os.path.exists(store.path("scan", "layers", base.split(":")[1] + ".json"))
    # another process: everything from the on-disk cache
    reads.clear()
    again = Inventories(store).image(targets.image(store, "two").stack)
    assert reads == []
    assert [p.as_dict() for p in again.packages] == [p.as_dict() for p in got.packages]
    # a cache file from an older reader format is recomputed, not trusted
    cache = Path(store.path("scan", "layers", base.split(":")[1] + ".json"))
    doc = json.loads(cache.read_text())
    doc["format"] = 0
    cache.write_text(json.dumps(doc))
    Inventories(store).image(targets.image(store, "two").stack)
    assert reads == [base]


def test_symlinks_in_a_layer_are_never_followed_on_the_host(store: Store, tmp_path: Path) -> None:
    """A layer's dpkg status, os-release and node_modules as symlinks to the host's files and
    directories: nothing of the host is read. Inside the tree, links resolve as in a chroot."""
    if not HOST_STATUS.exists():
        pytest.skip("no dpkg database on this machine")
    outside = tmp_path / "outside"
    (outside / "node_modules" / "evil").mkdir(parents=True)
    (outside / "node_modules" / "evil" / "package.json").write_text(
        '{"name":"evil","version":"6.6.6"}'
    )
    layer(store, "base", [
        d("var"), d("var/lib"), d("var/lib/dpkg"),
        sym("var/lib/dpkg/status", "/var/lib/dpkg/status"),  # absolute: the tree's own, absent
        d("etc"), sym("etc/os-release", "../../../../../../usr/lib/os-release"),
        d("usr"), d("usr/lib"), f("usr/lib/os-release", DEBIAN_9_OS_RELEASE),
        d("app"), sym("app/node_modules", str(outside / "node_modules")),
        d("opt"), sym("opt/venv", "/usr/lib/python3/dist-packages"),
    ])  # fmt: skip
    image(store, "img", ["base"])
    got = Inventories(store).image(targets.image(store, "img").stack)
    assert got.packages == []
    assert got.ecosystem == "Debian:9"  # the link resolved inside the tree, clamped at its root


def test_hostile_files_are_skipped_not_fatal(store: Store) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    huge_json = b'{"name":"big","version":"1.0.0","pad":"' + b"x" * (9 << 20) + b'"}'
    metadata = b"Name: fat\nVersion: 1.0\n" + b"X-Pad: " + b"y" * (3 << 20) + b"\n\nbody"
    layer(store, "base", [
        *files({
            "/n/node_modules/deep/package.json": nested,
            "/n/node_modules/big/package.json": huge_json,
            "/n/node_modules/list/package.json": b"[1, 2, 3]",
            "/n/node_modules/badver/package.json": b'{"name": "badver", "version": {"x": 1}}',
            "/n/node_modules/binary/package.json": os.urandom(4096),
            "/p/fat-1.0.dist-info/METADATA": metadata,
            "/p/empty-1.0.dist-info/METADATA": b"",
            "/var/lib/dpkg/status": b"\x00\xff" * 1000 + b"\nPackage: x\n",
        }),
        d("dev"), (_chardev("dev/null"), None),
    ])  # fmt: skip
    image(store, "img", ["base"])
    got = Inventories(store).image(targets.image(store, "img").stack)
    assert [(p.name, p.version) for p in got.packages] == [("fat", "1.0")]
    assert any("big/package.json" in w and "larger than" in w for w in got.warnings)


def _chardev(name: str):  # type: ignore[no-untyped-def]
    import tarfile

    from tarbuild import ti

    t = ti(name, tarfile.CHRTYPE, mode=0o666)
    t.devmajor, t.devminor = 1, 3
    return t
