"""OCI layouts, oci-archive and docker-archive: our round trips, peers' archives, hostile input."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from registry_fixture import PODMAN_RUN, busybox_layer, make_layer, podman, store_at, tree_file
from tophan import ArchiveError, IntegrityError, NotFound, Store, UsageError
from tophan.image import archive as oci
from tophan.image.blobs import digest_of, dumps
from tophan.image.images import ImageConfig
from tophan.image.spec import OCI_INDEX, OCI_MANIFEST, Platform

HAVE_PODMAN = shutil.which("podman") is not None
HAVE_SKOPEO = shutil.which("skopeo") is not None
HAVE_UMOCI = shutil.which("umoci") is not None


def _two_images(store: Store, work: Path) -> None:
    busybox_layer(store, "base", work)
    make_layer(store, "app1", {"srv/app": b"one\n"}, work)
    make_layer(store, "app2", {"srv/app": b"two\n"}, work)
    cfg = ImageConfig(cmd=["/bin/cat", "/srv/app"], env=["X=1"])
    store.images.create("one", ["base", "app1"], config=cfg)
    store.images.create("localhost/two:v2", ["base", "app2"], config=cfg, compression="zstd")


def _empty(store: Store) -> bool:
    return store.images.names() == [] and list(store.images.blobs.all()) == []


@pytest.mark.parametrize("fmt", ["oci-archive", "oci", "docker-archive"])
def test_export_import_roundtrip(tmp_path: Path, fmt: str) -> None:
    """Both images survive export + import into an empty store under their names: layers
    (trees), config, DiffIDs; OCI keeps the manifest digests; docker-archive keeps the config
    digest (the image ID). Exporting again writes identical bytes."""
    src = store_at(tmp_path / "src")
    _two_images(src, tmp_path)
    dest = tmp_path / ("layout" if fmt == "oci" else "out.tar")
    assert oci.export_images(src, ["one", "localhost/two:v2"], f"{fmt}:{dest}") == fmt
    dst = store_at(tmp_path / "dst")
    names = oci.import_images(dst, str(dest))
    assert sorted(names) == ["localhost/two:v2", "one:latest"]
    for name in names:
        a, b = src.images.get(name), dst.images.get(name)
        assert b.layers == a.layers and b.diff_ids == a.diff_ids
        assert b.config == a.config and b.config_descriptor.digest == a.config_descriptor.digest
        if fmt != "docker-archive":
            assert b.digest == a.digest
    assert tree_file(dst, dst.images.get("localhost/two:v2"), "srv/app") == b"two\n"
    if fmt != "oci":
        again = tmp_path / "again.tar"
        oci.export_images(src, ["one", "localhost/two:v2"], f"{fmt}:{again}")
        assert again.read_bytes() == dest.read_bytes()
    # importing again stores nothing new
    blobs = set(dst.images.blobs.all())
    oci.import_images(dst, str(dest))
    assert set(dst.images.blobs.all()) == blobs


def test_cli_import_export_select_and_name(tmp_path: Path) -> None:
    """The CLI: export several images to one archive; import one of them by --ref under a new
    NAME; NAME with several images is refused (one line, exit 2); '-' streams."""
    root = tmp_path / "s"
    src = store_at(root)
    _two_images(src, tmp_path)
    archive = tmp_path / "both.tar"
    r = run_cli("image", "export", "one", "localhost/two:v2", str(archive), root=root)
    assert (r.rc, r.out, r.err) == (0, "", "")
    other = tmp_path / "o"
    run_cli("init", str(other))
    r = run_cli("image", "import", str(archive), "renamed", "--ref", "localhost/two:v2", root=other)
    assert (r.rc, r.out) == (0, "renamed:latest\n"), r.err
    r = run_cli("image", "import", str(archive), "renamed2", root=other)
    assert r.rc == 2 and "holds 2 images" in r.err and len(r.err.splitlines()) == 1
    r = run_cli("image", "import", "-", "--json", root=other, input=archive.read_bytes())
    assert sorted(i["name"] for i in json.loads(r.out)) == ["localhost/two:v2", "one:latest"]
    r = run_cli("image", "export", "one", "-", "--format", "docker-archive", root=root)
    assert r.rc == 0
    with tarfile.open(fileobj=io.BytesIO(r.outb)) as tf:
        assert tf.getmember("manifest.json").size > 0
    r = run_cli("image", "import", str(tmp_path), root=other)
    assert r.rc == 1 and "neither an OCI layout" in r.err


def test_layout_dir_gets_images_added(tmp_path: Path) -> None:
    """Exporting into an existing OCI layout adds entries (same ref name replaced), and the
    layout's oci:DIR:REF form selects one image."""
    store = store_at(tmp_path / "s")
    _two_images(store, tmp_path)
    layout = tmp_path / "layout"
    oci.export_images(store, ["one"], f"oci:{layout}:first")
    oci.export_images(store, ["localhost/two:v2"], f"oci:{layout}:second")
    oci.export_images(store, ["localhost/two:v2"], f"oci:{layout}:first")
    index = json.loads((layout / "index.json").read_text())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert sorted(refs) == ["first", "second"]
    dst = store_at(tmp_path / "d")
    assert oci.import_images(dst, f"oci:{layout}:first", "picked") == ["picked:latest"]
    assert dst.images.get("picked").digest == store.images.get("localhost/two:v2").digest
    with pytest.raises(UsageError, match="has no name in the archive"):
        oci.import_images(dst, f"oci:{layout}")


def _write_layout(path: Path, blobs: dict[str, bytes], index: dict[str, object]) -> None:
    (path / "blobs/sha256").mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_bytes(dumps(index))
    for digest, data in blobs.items():
        (path / "blobs/sha256" / digest[7:]).write_bytes(data)


def _layer_blob(files: dict[str, bytes]) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    plain = buf.getvalue()
    return plain, digest_of(plain)


def _image(arch: str, files: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, object]]:
    """A hand-made single-layer image (uncompressed layer): its blobs and its descriptor."""
    layer, diff_id = _layer_blob(files)
    config = dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/x"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    )
    manifest = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff_id,
                    "size": len(layer),
                }
            ],
        }
    )
    blobs = {diff_id: layer, digest_of(config): config, digest_of(manifest): manifest}
    desc = {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(manifest),
        "size": len(manifest),
        "platform": {"os": "linux", "architecture": arch},
    }
    return blobs, desc


def test_index_platform_selection(tmp_path: Path) -> None:
    """A nested image index in a layout: the host's platform by default, --platform otherwise,
    a missing platform refused with the list of what is there."""
    amd_blobs, amd = _image("amd64", {"arch": b"amd64"})
    arm_blobs, arm = _image("arm64", {"arch": b"arm64"})
    inner = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd, arm]})
    blobs = {**amd_blobs, **arm_blobs, digest_of(inner): inner}
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": digest_of(inner),
                "size": len(inner),
                "annotations": {"org.opencontainers.image.ref.name": "example.com/multi:1"},
            }
        ],
    }
    layout = tmp_path / "layout"
    _write_layout(layout, blobs, index)
    store = store_at(tmp_path / "s")
    oci.import_images(store, str(layout), "arm", platform=Platform.parse("linux/arm64"))
    assert tree_file(store, store.images.get("arm"), "arch") == b"arm64"
    if Platform.host().architecture == "amd64":
        assert oci.import_images(store, str(layout)) == ["example.com/multi:1"]
        assert tree_file(store, store.images.get("example.com/multi:1"), "arch") == b"amd64"
    with pytest.raises(UsageError, match="linux/amd64, linux/arm64"):
        oci.import_images(store, str(layout), "x", platform=Platform.parse("linux/riscv64"))


@pytest.mark.parametrize("damage", ["layer-bytes", "diff-id", "missing-blob", "config-digest"])
def test_hostile_layouts_store_nothing(tmp_path: Path, damage: str) -> None:
    """A layer whose bytes do not match its digest, a config whose DiffID lies, a blob that is
    not there, a config that is not what the manifest says: refused, nothing stored."""
    blobs, desc = _image("amd64", {"f": b"data"})
    manifest = json.loads(blobs[desc["digest"]])  # type: ignore[index]
    layer_digest = manifest["layers"][0]["digest"]
    if damage == "layer-bytes":
        blobs[layer_digest] = blobs[layer_digest][:-1] + b"\x01"
    elif damage == "missing-blob":
        del blobs[layer_digest]
    elif damage == "config-digest":
        cfg = manifest["config"]["digest"]
        blobs[cfg] = blobs[cfg].replace(b"/x", b"/y")
    else:
        cfg_digest = manifest["config"]["digest"]
        cfg = json.loads(blobs[cfg_digest])
        cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
        new_cfg = dumps(cfg)
        del blobs[cfg_digest]
        manifest["config"] = {
            **manifest["config"],
            "digest": digest_of(new_cfg),
            "size": len(new_cfg),
        }
        blobs[digest_of(new_cfg)] = new_cfg
        new_manifest = dumps(manifest)
        del blobs[desc["digest"]]  # type: ignore[arg-type]
        desc = {**desc, "digest": digest_of(new_manifest), "size": len(new_manifest)}
        blobs[digest_of(new_manifest)] = new_manifest
    desc["annotations"] = {"org.opencontainers.image.ref.name": "example.com/x:1"}
    layout = tmp_path / "layout"
    _write_layout(layout, blobs, {"schemaVersion": 2, "manifests": [desc]})
    store = store_at(tmp_path / "s")
    with pytest.raises((IntegrityError, NotFound, ArchiveError)):
        oci.import_images(store, str(layout))
    assert _empty(store)
    r = run_cli("image", "import", str(layout), root=tmp_path / "s")
    assert r.rc == 1 and r.out == "" and len(r.err.splitlines()) == 1


def test_digest_path_traversal_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    _write_layout(
        layout,
        {},
        {
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": "sha256:../../../etc/passwd", "size": 1}
            ],
        },
    )
    store = store_at(tmp_path / "s")
    with pytest.raises(IntegrityError, match="invalid"):
        oci.import_images(store, str(layout), "x")
    assert _empty(store)


# -- peers ------------------------------------------------------------------------------------


def _podman_image(tmp_path: Path, pm: list[str]) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "rootfs/bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", ctx / "rootfs/bin/busybox")
    (ctx / "rootfs/bin/sh").symlink_to("busybox")
    (ctx / "rootfs/bin/cat").symlink_to("busybox")
    (ctx / "rootfs/etc").mkdir()
    (ctx / "rootfs/etc/motd").write_text("made by podman\n")
    (ctx / "Containerfile").write_text(
        "FROM scratch\nCOPY rootfs /\nENV GREETING=hello\nLABEL org.example=yes\n"
        "EXPOSE 8080/tcp\nWORKDIR /etc\nSTOPSIGNAL SIGINT\n"
        'HEALTHCHECK --interval=5s --retries=2 CMD ["/bin/cat", "/etc/motd"]\n'
        'CMD ["/bin/cat", "/etc/motd"]\n'
    )
    p = subprocess.run(
        [*pm, "build", "--format", "docker", "-t", "localhost/pm:v1", str(ctx)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*pm, "tag", "localhost/pm:v1", "localhost/pm2:v2"], capture_output=True)
    assert p.returncode == 0


@pytest.mark.skipif(not HAVE_PODMAN, reason="podman not installed")
def test_podman_archives_import(tmp_path: Path) -> None:
    """What `podman save` writes — oci-archive, docker-archive, multi-image docker-archive —
    imports with layers and config intact (Healthcheck and StopSignal survive docker-archive)."""
    store = store_at(tmp_path / "s")
    with podman(tmp_path) as pm:
        _podman_image(tmp_path, pm)
        for fmt in ("oci-archive", "docker-archive"):
            out = tmp_path / f"{fmt}.tar"
            subprocess.run(
                [*pm, "save", "--format", fmt, "-o", str(out), "localhost/pm:v1"],
                check=True,
                capture_output=True,
            )
        multi = tmp_path / "multi.tar"
        subprocess.run(
            [
                *pm,
                "save",
                "-m",
                "--format",
                "docker-archive",
                "-o",
                str(multi),
                "localhost/pm:v1",
                "localhost/pm2:v2",
            ],
            check=True,
            capture_output=True,
        )
    assert oci.import_images(store, str(tmp_path / "oci-archive.tar")) == ["localhost/pm:v1"]
    from_oci = store.images.get("localhost/pm:v1")
    assert tree_file(store, from_oci, "etc/motd") == b"made by podman\n"
    assert from_oci.config["Cmd"] == ["/bin/cat", "/etc/motd"]
    assert from_oci.config.env_dict()["GREETING"] == "hello"
    assert from_oci.config.working_dir == "/etc" and from_oci.config.exposed_ports == ["8080/tcp"]

    assert oci.import_images(store, f"docker-archive:{tmp_path / 'docker-archive.tar'}", "d") == [
        "d:latest"
    ]
    d = store.images.get("d")
    assert d.layers == from_oci.layers
    assert d.config.healthcheck is not None and d.config.healthcheck.retries == 2
    assert d.config.healthcheck.interval == 5 * 10**9 and d.config.stop_signal == "SIGINT"
    assert sorted(oci.import_images(store, str(multi))) == ["localhost/pm2:v2", "localhost/pm:v1"]
    # and it runs with `tophan run`: Cmd, WorkingDir and the layer as podman made them
    r = run_cli("run", "d", root=tmp_path / "s")
    assert (r.rc, r.out) == (0, "made by podman\n"), r.err
    r = run_cli(
        "run", "localhost/pm:v1", "/bin/sh", "-c", "pwd; echo $GREETING", root=tmp_path / "s"
    )
    assert (r.rc, r.out) == (0, "/etc\nhello\n"), r.err
    # the same layer arrived three times and is stored once
    assert (
        len({li.digest for n in store.images.names() for li in store.images.get(n).layer_infos})
        == 1
    )


@pytest.mark.skipif(not HAVE_PODMAN, reason="podman not installed")
def test_podman_loads_and_runs_our_archives(tmp_path: Path) -> None:
    """podman loads our oci-archive and docker-archive and runs the image as configured."""
    store = store_at(tmp_path / "s")
    busybox_layer(store, "base", tmp_path)
    store.images.create(
        "localhost/ours:v1",
        ["base"],
        config=ImageConfig(cmd=["/bin/sh", "-c", "cat /etc/motd; echo $WHO"], env=["WHO=us"]),
    )
    with podman(tmp_path) as pm:
        for fmt in ("oci-archive", "docker-archive"):
            out = tmp_path / f"ours-{fmt}.tar"
            oci.export_images(store, ["localhost/ours:v1"], f"{fmt}:{out}")
            p = subprocess.run([*pm, "load", "-i", str(out)], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            p = subprocess.run(
                [*pm, "run", "--rm", *PODMAN_RUN, "localhost/ours:v1"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (p.returncode, p.stdout) == (0, "hello from tophan\nus\n"), p.stderr
            subprocess.run([*pm, "rmi", "-f", "localhost/ours:v1"], capture_output=True)


@pytest.mark.skipif(not HAVE_SKOPEO, reason="skopeo not installed")
def test_skopeo_reads_our_archives(tmp_path: Path) -> None:
    """skopeo copies our oci-archive, OCI layout and docker-archive into an OCI layout, and the
    blobs it writes have the digests we wrote."""
    store = store_at(tmp_path / "s")
    _two_images(store, tmp_path)
    image = store.images.get("one")
    oci.export_images(store, ["one"], f"oci-archive:{tmp_path / 'a.tar'}")
    oci.export_images(store, ["one"], f"oci:{tmp_path / 'layout'}:one")
    oci.export_images(store, ["one"], f"docker-archive:{tmp_path / 'd.tar'}")
    for i, src in enumerate(
        [
            f"oci-archive:{tmp_path / 'a.tar'}",
            f"oci:{tmp_path / 'layout'}:one",
            f"docker-archive:{tmp_path / 'd.tar'}",
        ]
    ):
        dest = tmp_path / f"copy{i}"
        p = subprocess.run(["skopeo", "copy", src, f"oci:{dest}:x"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        index = json.loads((dest / "index.json").read_text())
        manifest = json.loads(
            (dest / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
        )
        config = json.loads((dest / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
        assert config["rootfs"]["diff_ids"] == image.diff_ids
        assert config["config"]["Cmd"] == ["/bin/cat", "/srv/app"]


@pytest.mark.skipif(not HAVE_UMOCI, reason="umoci not installed")
def test_umoci_image_imports(tmp_path: Path) -> None:
    """An image umoci made (two layers, one deleting a file of the other, config set with
    `umoci config`) imports with the whiteout applied and its config intact, and runs."""
    layout = tmp_path / "umoci"

    def umoci(*argv: str) -> None:
        subprocess.run(["umoci", *argv], check=True, capture_output=True)

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:t")
    bundle = tmp_path / "b"
    umoci("unpack", "--image", f"{layout}:t", str(bundle))
    (bundle / "rootfs/keep").write_text("keep\n")
    (bundle / "rootfs/gone").write_text("gone\n")
    (bundle / "rootfs/bin").mkdir()
    (bundle / "rootfs/srv").mkdir()
    shutil.copy2("/bin/busybox", bundle / "rootfs/bin/busybox")
    (bundle / "rootfs/bin/cat").symlink_to("busybox")
    umoci("repack", "--image", f"{layout}:t", str(bundle))
    shutil.rmtree(bundle)
    umoci("unpack", "--image", f"{layout}:t", str(bundle))
    (bundle / "rootfs/gone").unlink()
    (bundle / "rootfs/added").write_text("added\n")
    umoci("repack", "--image", f"{layout}:t", str(bundle))
    umoci(
        "config",
        "--image",
        f"{layout}:t",
        "--config.cmd=/bin/cat",
        "--config.cmd=/added",
        "--config.env=A=b",
        "--config.workingdir=/srv",
        "--config.label=made.by=umoci",
    )
    store = store_at(tmp_path / "s")
    with pytest.raises(UsageError, match="has no name"):
        oci.import_images(store, f"oci:{layout}:t")
    assert oci.import_images(store, f"oci:{layout}:t", "from-umoci") == ["from-umoci:latest"]
    image = store.images.get("from-umoci")
    assert len(image.layers) == 2
    assert image.config.cmd == ["/bin/cat", "/added"] and image.config.working_dir == "/srv"
    assert "A=b" in image.config.env and image.config.labels["made.by"] == "umoci"
    top = Path(image.layer_paths[1])
    assert (top / "gone").is_char_device() and (top / "added").read_text() == "added\n"
    umoci_manifest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert image.digest == umoci_manifest
    assert (
        hashlib.sha256(Path(store.images.blobs.path(image.digest)).read_bytes()).hexdigest()
        == (umoci_manifest[7:])
    )
    r = run_cli("run", "from-umoci", root=tmp_path / "s")
    assert (r.rc, r.out) == (0, "added\n"), r.err


def test_gzip_reader_members_padding_truncation_garbage() -> None:
    """The layer gunzip: concatenated members and zero padding are one stream; a cut stream or
    garbage after the end is refused."""
    import gzip

    from tophan.image.images import _decompressor

    data = bytes(range(256)) * 20000
    whole = gzip.compress(data, mtime=0)
    for blob in (
        whole,
        gzip.compress(data[:999], mtime=0) + gzip.compress(data[999:], mtime=0),
        whole + b"\0" * 4096,
    ):
        assert _decompressor("gzip", io.BytesIO(blob)).read() == data
    for bad, what in ((whole[:-9], "truncated"), (whole + b"junk", "garbage")):
        with pytest.raises(IntegrityError, match=what):
            _decompressor("gzip", io.BytesIO(bad)).read()


def _cli_with_known_pid(
    root: Path, args: list[str], plant: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI in a process whose pid is known before it writes anything: ``plant(pid)``
    runs first, as a local attacker who guesses the pid would."""
    code = (
        "import sys; sys.stdin.readline(); from tophan.cli.main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "--root", str(root), *args]
    p = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    plant(p.pid)
    out, err = p.communicate(b"\n", timeout=300)
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


@pytest.mark.parametrize("what", ["layer", "oci-archive", "docker-archive", "oci"])
def test_export_never_writes_through_a_planted_symlink(tmp_path: Path, what: str) -> None:
    """Issue 8 #16: symlinks planted at every temporary name the old writers used
    (``.NAME.tmp-PID``, ``NAME.tmp-PID``, a layout's ``blobs/…/HEX.tmp-PID``) point at a file
    outside; the export succeeds and the file stays as it was."""
    store = store_at(tmp_path / "s")
    _two_images(store, tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    dest = shared / ("layout" if what == "oci" else "out.tar")
    planted: list[Path] = []
    if what == "oci":  # an existing layout, so that blobs are copied into it
        oci.export_images(store, ["localhost/two:v2"], f"oci:{dest}")

    def plant(pid: int) -> None:
        names = [dest.parent / f".{dest.name}.tmp-{pid}", dest.parent / f"{dest.name}.tmp-{pid}"]
        if what == "oci":
            image = store.images.get("one")
            for digest in [image.config_descriptor.digest, *(li.blob for li in image.layer_infos)]:
                hexd = digest.split(":", 1)[1]
                names.append(dest / "blobs" / "sha256" / f"{hexd}.tmp-{pid}")
        for link in names:
            link.symlink_to(victim)
            planted.append(link)

    if what == "layer":
        args = ["layer", "export", "app1", str(dest)]
    else:
        args = ["image", "export", "one", f"{what}:{dest}"]
    r = _cli_with_known_pid(tmp_path / "s", args, plant)
    assert r.returncode == 0, r.stderr
    assert victim.read_bytes() == b"precious\n"
    assert all(p.is_symlink() for p in planted)
    dst = store_at(tmp_path / "d")
    if what == "layer":
        with dest.open("rb") as f:
            assert dst.layers.import_tar(f, "again").digest == store.layers.get("app1").digest
    else:
        oci.import_images(dst, f"{what}:{dest}" + (":one" if what == "oci" else ""))
