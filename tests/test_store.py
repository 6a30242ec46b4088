"""Store behaviour through the Python API: atomicity, crash leftovers, gc, locks."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import tophan
from tophan import Store


def small_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_api_roundtrip(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    layer = store.layers.import_tar(io.BytesIO(small_tar({"a": b"1"})), "a")
    assert layer.digest.startswith("sha256:") and len(layer.hex) == 64
    assert (Path(layer.path) / "a").read_bytes() == b"1"
    out = io.BytesIO()
    assert store.layers.export("a", out) == layer.digest
    assert store.layers.all()[0].name == "a"
    with pytest.raises(tophan.Exists):
        store.layers.import_tar(io.BytesIO(small_tar({"b": b"2"})), "a")
    with pytest.raises(tophan.NotFound):
        store.layers.get("zzz")
    with pytest.raises(tophan.UsageError):
        store.layers.get("../x")
    assert os.listdir(tmp_path / "s/tmp") == []


def test_open_missing_store(tmp_path: Path) -> None:
    with pytest.raises(tophan.NotFound, match="init"):
        Store(str(tmp_path / "none"))


def test_killed_import_leaves_only_gc_able_staging(tmp_path: Path) -> None:
    """SIGKILL in the middle of an extraction: nothing visible, and gc clears the leftovers.

    The tar goes through a pipe we hold: the first files (several of the reader's 1 MiB
    chunks) are written, the rest is held back, so once files show up in the staging tree the
    import is blocked reading the middle of the archive, where it is killed."""
    root = tmp_path / "s"
    Store.init(str(root))
    files = {f"f{i:04d}": os.urandom(4096) for i in range(2048)}  # ~10 MiB
    data = small_tar(files)
    code = (
        "import sys; from tophan import Store; "
        f"Store({str(root)!r}).layers.import_tar(sys.stdin.buffer, 'half')"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    assert p.stdin is not None
    try:
        p.stdin.write(data[: len(data) // 2])
        p.stdin.flush()
        tree = root / "tmp"
        # Wait (no deadline: pytest's timeout is the bound) until extraction has begun.
        while not any(tree.glob("layer-*/tree/f*")):
            assert p.poll() is None, "the import ended before it was killed"
            time.sleep(0.02)
        assert p.poll() is None  # still mid-archive: the second half was never sent
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdin.close()
    assert p.returncode == -signal.SIGKILL
    extracted = {f.name for f in tree.glob("layer-*/tree/f*")}
    assert extracted and len(extracted) < len(files)  # killed mid-extraction indeed
    store = Store(str(root))
    assert store.layers.all() == []
    assert os.listdir(root / "layers") == []
    assert os.listdir(root / "refs" / "layers") == []
    assert len(os.listdir(root / "tmp")) == 1
    from tophan import maintenance

    report = maintenance.gc(store)
    assert report.staging_removed == 1
    assert os.listdir(root / "tmp") == []


def test_gc_spares_a_live_staging_dir(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    live = store.staging("layer")
    try:
        from tophan import maintenance

        assert maintenance.gc(store).staging_removed == 0
        assert os.path.isdir(live.path)
    finally:
        live.discard()


def test_gc_removes_unreferenced_layer_tree(tmp_path: Path) -> None:
    """A crash between publishing a tree and writing its ref leaves an orphan tree."""
    store = Store.init(str(tmp_path / "s"))
    layer = store.layers.import_tar(io.BytesIO(small_tar({"a": b"1"})), "a")
    os.unlink(tmp_path / "s/refs/layers/a")
    from tophan import maintenance

    assert maintenance.gc(store).layers_removed == [layer.digest]
    assert os.listdir(tmp_path / "s/layers") == []


def test_dedup_keeps_one_tree(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    blob = small_tar({"big": b"z" * 1_000_000})
    a = store.layers.import_tar(io.BytesIO(blob), "a")
    b = store.layers.import_tar(io.BytesIO(blob), "b")
    assert a.digest == b.digest and a.path == b.path
    assert len(os.listdir(tmp_path / "s/layers")) == 1


def test_concurrent_imports_same_content(tmp_path: Path) -> None:
    root = tmp_path / "s"
    Store.init(str(root))
    tar = tmp_path / "t.tar"
    tar.write_bytes(small_tar({f"f{i}": os.urandom(2048) for i in range(200)}))
    code = (
        "import sys; from tophan import Store; "
        f"Store({str(root)!r}).layers.import_tar(open({str(tar)!r}, 'rb'), sys.argv[1])"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, f"n{i}"]) for i in range(6)]
    assert all(p.wait() == 0 for p in procs)
    store = Store(str(root))
    assert sorted(la.name for la in store.layers.all()) == [f"n{i}" for i in range(6)]
    assert len({la.digest for la in store.layers.all()}) == 1
    assert len(os.listdir(root / "layers")) == 1
    assert os.listdir(root / "tmp") == []


def test_open_layer_api_and_concurrent_sealing(tmp_path: Path) -> None:
    """find() leaves an open layer open; get() (a use) seals it, once, however many race."""
    from tophan.layer.layers import Layer, OpenLayer

    root = tmp_path / "s"
    store = Store.init(str(root))
    opened = store.layers.create("x")
    assert isinstance(opened, OpenLayer) and opened.digest is None
    for i in range(300):
        (Path(opened.path) / f"f{i}").write_bytes(os.urandom(4096))
    assert isinstance(store.layers.find("x"), OpenLayer)
    code = f"from tophan import Store; print(Store({str(root)!r}).layers.get('x').digest)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    digests = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    sealed = store.layers.find("x")
    assert isinstance(sealed, Layer) and digests == {sealed.digest}
    assert store.layers.verify(["x"])[0].ok
    assert os.listdir(root / "layers") == [sealed.hex]
    assert os.listdir(root / "tmp") == []
    store.layers.remove("x")
    assert os.listdir(root / "layers") == [] and os.listdir(root / "open/layers") == []


def test_seal_recovers_from_a_crash_while_hashing(tmp_path: Path) -> None:
    """A sealing that died while hashing left the directory moved aside: the next one uses it."""
    store = Store.init(str(tmp_path / "s"))
    opened = store.layers.create("x")
    (Path(opened.path) / "f").write_bytes(b"kept")
    os.rename(opened.path, Path(opened.path).with_name("sealing"))
    layer = store.layers.seal("x")
    assert (Path(layer.path) / "f").read_bytes() == b"kept"
    assert store.layers.verify(["x"])[0].ok


def test_an_app_holding_a_layer_by_digest_keeps_its_tree(tmp_path: Path) -> None:
    from tophan import maintenance
    from tophan.app.apps import Apps, AppSpec
    from tophan.run.options import RunOptions

    store = Store.init(str(tmp_path / "s"))
    layer = store.layers.import_tar(io.BytesIO(small_tar({"bin/true": b""})), "base")
    Apps(store).create("a", AppSpec(RunOptions(layers=[layer.hex[:12]], command=["/bin/true"])))
    store.layers.remove("base")  # the app holds the digest, not the name
    assert maintenance.gc(store).layers_removed == []
    assert store.layers.get(layer.hex[:12]).digest == layer.digest
    Apps(store).remove("a")
    assert maintenance.gc(store).layers_removed == [layer.digest]


def test_gc_keeps_open_layers_and_clears_an_orphan_open_dir(tmp_path: Path) -> None:
    """A crash between publishing an open layer's directory and writing its ref leaves the
    directory alone: gc removes that, never an open layer."""
    from tophan import maintenance

    root = tmp_path / "s"
    store = Store.init(str(root))
    kept = store.layers.create("kept")
    (Path(kept.path) / "f").write_bytes(b"work in progress")
    (root / "open/layers/ghost/content").mkdir(parents=True)
    assert maintenance.gc(store).staging_removed == 1
    assert os.listdir(root / "open/layers") == ["kept"]
    assert (Path(store.layers.find("kept").path) / "f").read_bytes() == b"work in progress"
