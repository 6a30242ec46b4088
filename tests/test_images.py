"""Images in one store: create, config, list/inspect/tag/rm, reproducibility, gc and fsck."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from registry_fixture import make_layer, store_at
from tophan import Exists, NotFound, UsageError, maintenance
from tophan.image.images import Healthcheck, ImageConfig
from tophan.image.spec import OCI_MANIFEST, Platform, normalize_name, remote_reference


def test_create_records_layers_config_and_platform(tmp_path: Path) -> None:
    """An image is its layers bottom→top (trees in the store) plus the runtime config, stored as
    an OCI manifest + config whose DiffIDs are the layers' digests."""
    store = store_at(tmp_path / "s")
    base = make_layer(store, "base", {"etc/os": b"base\n"}, tmp_path)
    top = make_layer(store, "top", {"app/run": b"run\n"}, tmp_path)
    config = ImageConfig(
        entrypoint=["/app/run"],
        cmd=["--serve"],
        env=["PATH=/bin", "MODE=prod"],
        working_dir="/app",
        user="1000:1000",
        exposed_ports=["8080/tcp"],
        volumes=["/data"],
        labels={"org.example": "yes"},
        stop_signal="SIGTERM",
        healthcheck=Healthcheck(["CMD-SHELL", "true"], interval=5 * 10**9, retries=3),
    )
    image = store.images.create("app", ["base", "top"], config=config)
    assert image.name == "app:latest"
    assert image.layers == [base, top] == image.diff_ids
    assert [Path(p).is_dir() for p in image.layer_paths] == [True, True]
    assert image.manifest["mediaType"] == OCI_MANIFEST
    assert image.config == config
    oci = dict(image.config)  # the OCI config object, as the runtime reads it
    assert oci["Cmd"] == ["--serve"] and oci["Healthcheck"]["Interval"] == 5 * 10**9
    assert oci["ExposedPorts"] == {"8080/tcp": {}} and image.config.env_dict()["MODE"] == "prod"
    assert image.platform == Platform.host()
    assert image.raw_config["rootfs"] == {"type": "layers", "diff_ids": [base, top]}
    assert store.images.get("app:latest").digest == image.digest


def test_create_from_base_appends_and_merges(tmp_path: Path) -> None:
    """--from keeps the base's layer blobs and config; new layers go on top, --env replaces a
    key in place, and the base's blobs are reused rather than re-compressed."""
    root = tmp_path / "s"
    store = store_at(root)
    make_layer(store, "base", {"etc/os": b"base\n"}, tmp_path)
    make_layer(store, "extra", {"srv/x": b"x\n"}, tmp_path)
    r = run_cli(
        "image",
        "create",
        "base-img",
        "-l",
        "base",
        "--env",
        "A=1",
        "--env",
        "B=2",
        "--cmd",
        "sh -c 'echo hi'",
        "--port",
        "80",
        "--label",
        "k=v",
        root=root,
    )
    assert (r.rc, r.out, r.err) == (0, "base-img:latest\n", "")
    r = run_cli(
        "image",
        "create",
        "derived",
        "--from",
        "base-img",
        "-l",
        "extra",
        "--env",
        "A=9",
        "--health-cmd",
        '["/bin/true"]',
        "--health-interval",
        "1m30s",
        "--json",
        root=root,
    )
    assert r.rc == 0, r.err
    derived = store.images.get("derived")
    base = store.images.get("base-img")
    assert json.loads(r.out)["digest"] == derived.digest
    assert derived.layers == [*base.layers, store.layers.get("extra").digest]
    assert derived.layer_infos[0].blob == base.layer_infos[0].blob
    assert derived.config.env == ["A=9", "B=2"]
    assert derived.config.cmd == ["sh", "-c", "echo hi"]
    assert derived.config.exposed_ports == ["80/tcp"] and derived.config.labels == {"k": "v"}
    assert derived.config.healthcheck == Healthcheck(["CMD", "/bin/true"], 90 * 10**9)
    assert len(derived.raw_config["history"]) == 2


def test_layer_order_on_the_cli_is_top_first(tmp_path: Path) -> None:
    """Like `ws create`, the first -l is the top layer; the image lists layers bottom→top."""
    root = tmp_path / "s"
    store = store_at(root)
    a = make_layer(store, "a", {"f": b"a"}, tmp_path)
    b = make_layer(store, "b", {"f": b"b"}, tmp_path)
    assert run_cli("image", "create", "x", "-l", "b", "-l", "a", root=root).rc == 0
    assert store.images.get("x").layers == [a, b]


def test_compression_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stores making the same image from the same layer get the same blobs (gzip and zstd)
    and, with SOURCE_DATE_EPOCH, the same manifest digest."""
    import io
    import tarfile

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    tar = tmp_path / "layer.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        data = b"#!/bin/sh\n" * 5000
        info = tarfile.TarInfo("bin/tool")
        info.size, info.mode, info.mtime = len(data), 0o755, 1_600_000_000
        tf.addfile(info, io.BytesIO(data))
    digests = []
    for n in (1, 2):
        store = store_at(tmp_path / f"s{n}")
        with open(tar, "rb") as f:
            store.layers.import_tar(f, "base")
        gz = store.images.create("gz", ["base"], compression="gzip")
        zs = store.images.create("zs", ["base"], compression="zstd")
        plain = store.images.create("plain", ["base"], compression=None)
        assert plain.layer_infos[0].blob == plain.layer_infos[0].diff_id
        assert zs.layer_infos[0].media_type.endswith("+zstd")
        digests.append((gz.digest, zs.digest, gz.layer_infos[0].blob, zs.layer_infos[0].blob))
    assert digests[0] == digests[1]


def test_list_inspect_tag_rm(tmp_path: Path) -> None:
    """list/inspect/tag/rm through the CLI, with --json; rm of one name keeps the blobs another
    name needs, rm of the last name frees them (and the trees only the image used)."""
    root = tmp_path / "s"
    store = store_at(root)
    make_layer(store, "base", {"f": b"1"}, tmp_path)
    assert run_cli("image", "create", "app", "-l", "base", root=root).rc == 0
    assert run_cli("image", "tag", "app", "localhost:5000/team/app:v1", root=root).rc == 0
    r = run_cli("image", "list", "--json", root=root)
    listed = json.loads(r.out)
    assert [i["name"] for i in listed] == ["app:latest", "localhost:5000/team/app:v1"]
    assert listed[0]["digest"] == listed[1]["digest"]
    r = run_cli("image", "list", root=root)
    assert r.out.splitlines()[0].split("\t")[:2] == ["app:latest", listed[0]["digest"]]
    info = json.loads(run_cli("image", "inspect", "app", root=root).out)
    assert info["names"] == ["app:latest", "localhost:5000/team/app:v1"]
    assert info["layers"][0]["diff_id"] == store.layers.get("base").digest
    blobs = set(store.images.blobs.all())
    assert len(blobs) == 3
    assert run_cli("image", "rm", "app", root=root).rc == 0
    assert set(store.images.blobs.all()) == blobs
    assert run_cli("image", "rm", "localhost:5000/team/app:v1", root=root).rc == 0
    assert list(store.images.blobs.all()) == []
    assert store.layers.get("base")  # a named layer outlives the images made of it
    r = run_cli("image", "rm", "app", root=root)
    assert (
        r.rc == 1
        and r.out == ""
        and r.err == "tophan: no such image: app:latest (see `image list`)\n"
    )


def test_errors_are_one_line(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = store_at(root)
    make_layer(store, "base", {"f": b"1"}, tmp_path)
    cases = [
        (("image", "create", "app", "-l", "nope"), 1, "no such layer: nope"),
        (("image", "create", "App", "-l", "base"), 2, "invalid image name"),
        (("image", "create", "app"), 2, "at least one layer"),
        (("image", "create", "app", "-l", "base", "--env", "NOEQUALS"), 2, "invalid --env"),
        (("image", "create", "app", "-l", "base", "--compress", "xz"), 2, "unknown --compress"),
        (("image", "create", "app", "-l", "base", "--health-interval", "5x"), 2, "--health"),
        (("image", "create", "app", "-l", "base", "--cmd", "[1,2]"), 2, "JSON array of strings"),
        (("image", "frob"), 2, "unknown image subcommand"),
        (("image", "inspect", "missing"), 1, "no such image"),
    ]
    for argv, rc, text in cases:
        r = run_cli(*argv, root=root)
        assert (r.rc, r.out) == (rc, ""), (argv, r.err)
        assert text in r.err and len(r.err.splitlines()) == 1, (argv, r.err)
    store.images.create("app", ["base"])
    with pytest.raises(Exists):
        store.images.create("app", ["base"])
    assert store.images.create("app", ["base"], replace_existing=True).name == "app:latest"
    with pytest.raises(NotFound):
        store.images.get("nope")
    with pytest.raises(UsageError):
        normalize_name("Bad Name")


def test_references() -> None:
    assert normalize_name("app") == "app:latest"
    assert normalize_name("localhost:5000/a/b:v1") == "localhost:5000/a/b:v1"
    assert str(remote_reference("busybox")) == "docker.io/library/busybox:latest"
    ref = remote_reference("127.0.0.1:5000/x@sha256:" + "a" * 64)
    assert (ref.domain, ref.path, ref.tag, ref.reference) == (
        "127.0.0.1:5000",
        "x",
        "",
        "sha256:" + "a" * 64,
    )
    for bad in ("UP", "a//b", "a:", "x@sha256:short", ":tag", ""):
        with pytest.raises(UsageError):
            normalize_name(bad)


def test_gc_keeps_image_layers_and_fsck_checks_blobs(tmp_path: Path) -> None:
    """gc keeps trees and blobs an image needs even with no layer name left; fsck notices a
    blob whose bytes changed and a blob that went missing."""
    store = store_at(tmp_path / "s")
    make_layer(store, "base", {"f": b"1" * 1000}, tmp_path)
    image = store.images.create("app", ["base"])
    store.layers.remove("base")  # the image alone keeps the tree
    report = maintenance.gc(store)
    assert report.layers_removed == [] and report.blobs_removed == []
    assert all(Path(p).is_dir() for p in store.images.get("app").layer_paths)
    assert maintenance.fsck(store).ok
    blob = Path(store.images.blobs.path(image.layer_infos[0].blob))
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")
    problems = maintenance.fsck(store).problems
    assert any("does not match its digest" in p for p in problems), problems
    blob.unlink()
    problems = maintenance.fsck(store).problems
    assert any("is missing" in p for p in problems), problems


def test_missing_tree_is_restored_from_the_image_blob(tmp_path: Path) -> None:
    """`layer rm` of the last name of a layer an image uses keeps its tree (the image needs
    it); a tree lost anyway (deleted by hand) is unpacked again from the image's own blob."""
    store = store_at(tmp_path / "s")
    digest = make_layer(store, "base", {"etc/motd": b"hi\n"}, tmp_path)
    store.images.create("app", ["base"])
    store.layers.remove("base")
    tree = Path(store.layers.tree_path(digest))
    assert tree.exists()
    from tophan._internal.fs import rmtree

    rmtree(str(tree.parent))
    assert not tree.exists()
    image = store.images.get("app")
    assert image.layers == [digest]
    assert (Path(image.layer_paths[0]) / "etc/motd").read_bytes() == b"hi\n"
    assert store.layers.verify()[0].ok


def test_a_transaction_holds_the_blobs_and_trees_it_builds_on(tmp_path: Path) -> None:
    """Issue 8 #14: a pull that found a blob and a tree in the store, while `image rm` (another
    process) removes the only image using them, still finds them when it publishes; once the
    transaction is gone they are garbage again."""
    import subprocess

    from conftest import BIN

    store = store_at(tmp_path / "s")
    make_layer(store, "base", {"f": b"shared\n"}, tmp_path)
    image = store.images.create("old", ["base"])
    store.layers.remove("base")  # only the image keeps the tree now
    blob, diff_id = image.layer_infos[0].blob, image.layer_infos[0].diff_id
    with store.images.transaction() as tx:
        assert tx.has_blob(blob)  # what a pull asks before it skips a download
        tree = tx.tree_for(diff_id)
        assert tree == image.layers[0]
        r = subprocess.run(
            [str(BIN / "tophan"), "--root", str(store.root), "image", "rm", "old"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert Path(tx.blob_path(blob)).is_file(), "image rm deleted a blob a pull was using"
        assert Path(store.layers.tree_path(tree)).is_dir(), "image rm deleted a tree in use"
        assert maintenance.gc(store).blobs_removed == []  # a gc meanwhile keeps them too
    report = maintenance.gc(store)  # the transaction ended without publishing
    assert blob in report.blobs_removed and tree in report.layers_removed, report


@pytest.mark.parametrize(
    ("config", "count", "message"),
    [
        ({"rootfs": {"diff_ids": 5}}, 1, "rootfs.diff_ids is a number, not a list"),
        ({"rootfs": 5}, 1, "rootfs is a number, not an object"),
        ({}, 0, "rootfs is null, not an object"),
        ({"rootfs": {"diff_ids": []}}, 1, "config lists 0 DiffIDs for 1 layers"),
        ({"rootfs": {"diff_ids": [5]}}, 1, "rootfs.diff_ids is a list of other things"),
        ({"rootfs": {"diff_ids": ["sha256:" + "a" * 64 + "\n"]}}, 1, "invalid DiffID"),
        ({"rootfs": {"diff_ids": ["md5:" + "a" * 32]}}, 1, "invalid DiffID"),
    ],
)
def test_config_diff_ids_are_checked_in_one_place(
    config: dict[str, object], count: int, message: str
) -> None:
    from tophan.errors import IntegrityError
    from tophan.image.spec import config_diff_ids

    with pytest.raises(IntegrityError) as e:
        config_diff_ids(config, count, "image x")
    assert str(e.value).startswith(
        "image x: " if "DiffIDs" in message or "rootfs" in message else ""
    )
    assert message in str(e.value) and "\n" not in str(e.value)
    good = "sha256:" + "b" * 64
    assert config_diff_ids({"rootfs": {"diff_ids": [good]}}, 1, "x") == [good]


def test_a_name_too_long_for_its_ref_file_is_one_line(tmp_path: Path) -> None:
    """Issue 8 #15: a valid reference whose quoted file name exceeds NAME_MAX said only
    "File name too long (<path>)"."""
    store = store_at(tmp_path / "s")
    make_layer(store, "base", {"f": b"x"}, tmp_path)
    name = "localhost:5000/" + "/".join(["ab"] * 70) + ":v1"
    r = run_cli("--root", str(store.root), "image", "create", name, "-l", "base")
    assert r.rc == 2 and "image name too long" in r.err and r.err.count("\n") == 1, r.err
    assert "File name too long" not in r.err
    assert store.images.names() == []
