"""The overlayd command-line contract, through the real entry points, as root.

Rules checked everywhere: exit 0/1/2; on failure stdout is empty and stderr is exactly one line
``<prog>: <message>``; on success stderr is empty.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import Result, run_cli


def ok(r: Result) -> Result:
    assert r.rc == 0, r.err
    assert r.err == ""
    return r


def fails(r: Result, rc: int, prog: str = "tophan", contains: str = "") -> Result:
    assert r.rc == rc, (r.rc, r.out, r.err)
    assert r.out == ""
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith(f"{prog}: ")
    assert contains in lines[0]
    return r


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1_700_000_000
            import io

            tf.addfile(ti, io.BytesIO(data))
    return path


# -- store -----------------------------------------------------------------------------------


def test_init_prints_path_as_given_and_is_idempotent(tmp_path: Path) -> None:
    r = ok(run_cli("init", "rel-store", cwd=tmp_path))
    assert r.out == "rel-store\n"
    assert (tmp_path / "rel-store/store.meta").exists()
    ok(run_cli("init", "rel-store", cwd=tmp_path))
    r = ok(run_cli("--root", str(tmp_path / "r2"), "init"))
    assert r.out == f"{tmp_path / 'r2'}\n"


def test_missing_store_hints_init(tmp_path: Path) -> None:
    r = fails(run_cli("layer", "list", root=tmp_path / "nope"), 1, contains="init")
    assert "tophan init" in r.err


def test_overlayd_root_resolution(tmp_path: Path) -> None:
    env = {**os.environ, "OVERLAYD_ROOT": ""}
    env.pop("OVERLAYD_ROOT")
    r = ok(run_cli("init", prog="overlayd", cwd=tmp_path, env=env))
    assert r.out == "./.overlayd\n"
    assert (tmp_path / ".overlayd/store.meta").exists()
    env["OVERLAYD_ROOT"] = str(tmp_path / "envroot")
    r = ok(run_cli("init", prog="overlayd", cwd=tmp_path, env=env))
    assert r.out == f"{tmp_path / 'envroot'}\n"
    ok(run_cli("layer", "create", "x", prog="overlayd", cwd=tmp_path, env=env))
    r = fails(run_cli("layer", "path", "x", prog="overlayd", cwd=tmp_path), 1, "overlayd")
    assert "no such layer" in r.err
    ok(run_cli("layer", "path", "x", prog="overlayd", cwd=tmp_path, env=env))


def test_tophan_root_env(tmp_path: Path) -> None:
    env = {**os.environ, "TOPHAN_ROOT": str(tmp_path / "t")}
    ok(run_cli("init", env=env))
    ok(run_cli("layer", "create", "a", env=env))
    assert ok(run_cli("layer", "list", env=env)).out.startswith("a\t")


# -- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["layer"],
        ["layer", "frob"],
        ["layer", "create"],
        ["layer", "create", "a", "b"],
        ["layer", "create", "bad/name"],
        ["layer", "create", ".."],
        ["layer", "create", "-lead"],
        ["layer", "create", "x" * 65],
        ["layer", "info", "a", "--bogus"],
        ["ws", "create", "w"],
        ["ws", "create", "w", "-l"],
        ["ws", "path"],
        ["ws", "rm", "a", "b"],
        ["materialize", "w", "-l", "base"],
        ["materialize", "w", "-l", "base", "-m", "/tmp/x", "--no-mount"],
        ["layer", "export", "a", "-", "--compress", "lz4"],
        ["--bogus", "layer", "list"],
        [],
    ],
)
def test_usage_errors_rc2(cli: Any, args: list[str]) -> None:
    fails(cli(*args), 2)


@pytest.mark.parametrize("args", [["help"], ["-h"], ["--help"], ["layer", "-h"], ["ws", "help"]])
def test_help_on_stderr_rc0(cli: Any, args: list[str]) -> None:
    r = cli(*args)
    assert r.rc == 0 and r.out == ""
    assert "usage:" in r.err


def _every_command(prog: str) -> list[tuple[str, ...]]:
    """Every command and subcommand (aliases too) the entry point dispatches, from its tables."""
    from tophan.cli import main as cli_main

    out: list[tuple[str, ...]] = []
    for name, entry in cli_main.command_table(prog == "overlayd").items():
        out.append((name,))
        table = cli_main.resolve(entry)
        if isinstance(table, dict):
            out += [(name, sub) for sub in table]
    return out


@pytest.mark.parametrize(
    ("prog", "command"),
    [(p, c) for p in ("tophan", "overlayd") for c in _every_command(p)],
    ids=lambda x: " ".join(x) if isinstance(x, tuple) else x,
)
def test_every_command_answers_help(prog: str, command: tuple[str, ...]) -> None:
    from tophan.cli import help as helptext

    for flag in ("--help", "-h"):
        r = run_cli(*command, flag, prog=prog)
        assert r.rc == 0 and r.out == "", (r.rc, r.out, r.err)
        canonical = helptext.ALIASES.get(" ".join(command), " ".join(command))
        first = r.err.splitlines()[0]
        assert first.startswith(f"usage: {prog} {canonical}"), r.err
        assert "\nexample:\n" in r.err, r.err
    assert run_cli("help", *command, prog=prog).err == r.err


@pytest.mark.parametrize(
    "args",
    [
        ["gc", "--json", "--help"],
        ["app", "create", "web", "--help"],
        ["ws", "rm", "-f", "w", "-h"],
        ["image", "push", "--help"],
    ],
)
def test_help_among_options(args: list[str]) -> None:
    r = run_cli(*args)
    if args[:2] == ["image", "push"]:  # not a command: the group says so, with its help hint
        fails(r, 2, contains="tophan image --help")
        return
    assert r.rc == 0 and r.out == "" and r.err.startswith("usage: "), r.err


def test_help_has_overlayd_summary_lines() -> None:
    for prog in ("tophan", "overlayd"):
        text = run_cli("help", prog=prog).err
        assert "layer create|list|rm|path|info|commit|import|export" in text
        assert "ws create|list|info|path|upper|mount|unmount|rm" in text
        assert run_cli("--help", prog=prog).err == text


def test_version(cli: Any) -> None:
    assert ok(cli("version")).out.startswith("tophan ")
    assert ok(run_cli("version", prog="overlayd")).out.startswith("overlayd 0.1.0")


def test_help_documents_name_rule(cli: Any) -> None:
    assert "not starting with '-'" in cli("help").err


# -- layers ------------------------------------------------------------------------------------


def test_layer_lifecycle(cli: Any, root: Path) -> None:
    assert ok(cli("layer", "create", "b")).out == "b\n"
    assert ok(cli("layer", "create", "a")).out == "a\n"
    fails(cli("layer", "create", "a"), 1, contains="exists")
    lines = ok(cli("layer", "list")).out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "b"]
    # name, digest, created (ISO, like `image list`), size, state
    assert [line.split("\t")[4] for line in lines] == ["open", "open"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0].split("\t")[2])
    overlayd_rows = ok(run_cli("layer", "list", prog="overlayd", root=root)).out.splitlines()
    assert all(re.fullmatch(r"[ab]\t\d+", row) for row in overlayd_rows)  # its two columns
    path = ok(cli("layer", "path", "a")).out.strip()
    assert os.path.isdir(path) and os.listdir(path) == []
    info = dict(line.split("=", 1) for line in ok(cli("layer", "info", "a")).out.splitlines())
    assert info["name"] == "a" and info["state"] == "open" and "digest" not in info
    assert info["created_at"].isdigit()
    digest = ok(cli("layer", "seal", "a")).out.strip()
    assert digest.startswith("sha256:")
    assert ok(cli("layer", "seal", "a")).out.strip() == digest  # sealed already: as it is
    info = dict(line.split("=", 1) for line in ok(cli("layer", "info", "a")).out.splitlines())
    assert info["state"] == "sealed" and info["digest"] == digest
    js = json.loads(ok(cli("layer", "info", "a", "--json")).out)
    assert js["digest"] == digest and js["state"] == "sealed"
    assert [x["name"] for x in json.loads(ok(cli("layer", "list", "--json")).out)] == ["a", "b"]
    assert ok(cli("layer", "rm", "a")).out == ""
    assert ok(cli("layer", "rm", "b")).out == ""
    fails(cli("layer", "rm", "a"), 1, contains="no such layer")
    fails(cli("layer", "path", "a"), 1)
    fails(cli("layer", "info", "a"), 1)
    assert os.listdir(root / "open/layers") == [] and os.listdir(root / "layers") == []


def _fill(path: Path, files: dict[str, bytes]) -> None:
    """Files with a fixed mtime, so that equal content hashes equal."""
    for name, data in files.items():
        (path / name).write_bytes(data)
        os.utime(path / name, (1_700_000_000, 1_700_000_000))
    os.utime(path, (1_700_000_000, 1_700_000_000))


def test_open_layers_are_private_until_sealed(cli: Any, root: Path) -> None:
    """overlayd scripts fill an empty layer through `layer path`: each open layer is its own
    directory, not the one tree every empty layer hashes to."""
    ok(cli("layer", "create", "base"))
    _fill(Path(ok(cli("layer", "path", "base")).out.strip()), {"f": b"hi\n"})
    ok(cli("layer", "create", "fresh"))
    assert os.listdir(ok(cli("layer", "path", "fresh")).out.strip()) == []
    # open layers have nothing to verify: never CHANGED
    out = ok(cli("layer", "verify", "base", "fresh")).out
    assert out.count("\t-\topen") == 2 and "CHANGED" not in out
    assert ok(cli("fsck")).out.endswith("ok\n")
    # gc leaves open layers alone, whatever it removes
    ok(cli("gc"))
    assert (Path(ok(cli("layer", "path", "base")).out.strip()) / "f").read_bytes() == b"hi\n"
    # the same content in another open layer: sealing stores it once
    ok(cli("layer", "create", "twin"))
    old_path = Path(ok(cli("layer", "path", "twin")).out.strip())
    _fill(old_path, {"f": b"hi\n"})
    assert ok(cli("layer", "seal", "twin")).out == ok(cli("layer", "seal", "base")).out
    assert len(os.listdir(root / "layers")) == 1
    # the path a script kept still reads, now the sealed tree
    assert (old_path / "f").read_bytes() == b"hi\n"
    sealed_path = ok(cli("layer", "path", "twin")).out.strip()
    assert sealed_path.startswith(str(root / "layers"))
    assert os.path.realpath(old_path) == sealed_path
    ok(cli("layer", "rm", "twin"))
    assert (Path(ok(cli("layer", "path", "base")).out.strip()) / "f").exists()
    for name in ("base", "fresh"):
        ok(cli("layer", "rm", name))
    assert os.listdir(root / "layers") == [] and os.listdir(root / "open/layers") == []


@pytest.mark.parametrize("use", ["ws", "export", "image"])
def test_first_use_seals(cli: Any, root: Path, tmp_path: Path, use: str) -> None:
    ok(cli("layer", "create", "l"))
    _fill(Path(ok(cli("layer", "path", "l")).out.strip()), {"f": b"x"})
    if use == "ws":
        ok(cli("ws", "create", "w", "-l", "l", "--no-mount"))
    elif use == "export":
        ok(cli("layer", "export", "l", str(tmp_path / "l.tar")))
    else:
        ok(cli("image", "create", "img", "-l", "l"))
    info = json.loads(ok(cli("layer", "info", "l", "--json")).out)
    assert info["state"] == "sealed"
    assert (Path(info["path"]) / "f").read_bytes() == b"x"
    assert ok(cli("layer", "verify", "l")).out.endswith("\tok\n")
    if use == "ws":
        ok(cli("ws", "rm", "w"))
    if use == "image":
        ok(cli("image", "rm", "img"))
    ok(cli("layer", "rm", "l"))


def test_identical_imports_are_stored_once(cli: Any, root: Path, tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", {"f": b"x" * 100_000, "d/g": b"y"})
    assert ok(cli("layer", "import", str(tar), "one")).out == "one\n"
    assert ok(cli("layer", "import", "-", "two", input=tar.read_bytes())).out == "two\n"
    d1 = json.loads(ok(cli("layer", "info", "one", "--json")).out)["digest"]
    d2 = json.loads(ok(cli("layer", "info", "two", "--json")).out)["digest"]
    assert d1 == d2
    assert len(os.listdir(root / "layers")) == 1
    ok(cli("layer", "rm", "one"))
    assert (Path(ok(cli("layer", "path", "two")).out.strip()) / "f").exists()
    ok(cli("layer", "rm", "two"))
    assert os.listdir(root / "layers") == []


def test_export_import_roundtrip_same_digest(cli: Any, tmp_path: Path, busybox_tar: Path) -> None:
    ok(cli("layer", "import", str(busybox_tar), "base"))
    out = tmp_path / "out.tar"
    r = ok(cli("layer", "export", "base", str(out)))
    assert r.out == ""
    ok(cli("layer", "import", str(out), "again"))
    a = json.loads(cli("layer", "info", "base", "--json").out)["digest"]
    b = json.loads(cli("layer", "info", "again", "--json").out)["digest"]
    assert a == b
    stdout = ok(cli("layer", "export", "base", "-")).outb
    assert stdout == out.read_bytes()
    for comp in ("gzip", "zstd"):
        c = tmp_path / f"out.{comp}"
        ok(cli("layer", "export", "base", str(c), "--compress", comp))
        ok(cli("layer", "import", str(c), f"from-{comp}"))
        d = json.loads(cli("layer", "info", f"from-{comp}", "--json").out)["digest"]
        assert d == a


def test_bad_import_leaves_nothing(cli: Any, root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 40)
    fails(cli("layer", "import", str(bad), "x"), 1)
    fails(cli("layer", "import", "-", "y", input=b""), 1)
    fails(cli("layer", "import", str(tmp_path / "missing.tar"), "z"), 1)
    assert ok(cli("layer", "list")).out == ""
    assert os.listdir(root / "tmp") == []
    assert os.listdir(root / "layers") == []


def test_export_missing_layer_writes_nothing(cli: Any, tmp_path: Path) -> None:
    fails(cli("layer", "export", "nope", str(tmp_path / "o.tar")), 1)
    assert not (tmp_path / "o.tar").exists()


def test_layer_create_from_dir(cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/file").write_text("hello")
    ok(cli("layer", "create", "fromdir", "--from", str(src)))
    p = Path(ok(cli("layer", "path", "fromdir")).out.strip())
    assert (p / "sub/file").read_text() == "hello"


def test_verify_and_fsck_detect_changes(cli: Any, tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", {"f": b"original"})
    ok(cli("layer", "import", str(tar), "l"))
    assert "ok" in ok(cli("layer", "verify", "l")).out
    assert ok(cli("fsck")).out.endswith("ok\n")
    p = Path(ok(cli("layer", "path", "l")).out.strip())
    (p / "f").write_bytes(b"tampered")
    r = cli("layer", "verify", "l")
    assert r.rc == 1 and "CHANGED" in r.out
    r = cli("fsck")
    assert r.rc == 1 and "changed" in r.out


def test_gc_removes_staging_leftovers(cli: Any, root: Path) -> None:
    (root / "tmp/layer-deadbeef/tree/x").mkdir(parents=True)
    r = ok(cli("gc"))
    assert "staging_removed=1" in r.out
    assert os.listdir(root / "tmp") == []
    assert json.loads(ok(cli("gc", "--json")).out)["staging_removed"] == 0


# -- workspaces --------------------------------------------------------------------------------


def _setup_base(cli: Any, busybox_tar: Path) -> None:
    ok(cli("layer", "import", str(busybox_tar), "base"))


def test_ws_contract(cli: Any, root: Path, tmp_path: Path, busybox_tar: Path) -> None:
    _setup_base(cli, busybox_tar)
    ok(cli("layer", "create", "top"))
    mp = ok(cli("ws", "create", "w", "-l", "top", "-l", "base")).out.strip()
    assert os.path.isabs(mp) and os.path.ismount(mp)
    assert (Path(mp) / "bin/busybox").exists()
    fails(cli("ws", "create", "w", "-l", "base"), 1, contains="exists")
    assert ok(cli("ws", "path", "w")).out.strip() == mp
    upper = ok(cli("ws", "upper", "w")).out.strip()
    assert os.path.isabs(upper) and os.path.isdir(upper)
    row = ok(cli("ws", "list")).out.splitlines()
    assert row == [f"w\tmounted\t{mp}\ttop,base"]
    info = dict(line.split("=", 1) for line in ok(cli("ws", "info", "w")).out.splitlines())
    assert info["mounted"] == "1" and info["lowers"] == "top,base"
    assert json.loads(ok(cli("ws", "info", "w", "--json")).out)["mounted"] is True
    # mounting again is fine: it is our overlay
    assert ok(cli("ws", "mount", "w")).out == ""
    fails(cli("layer", "rm", "base"), 1, contains="in use")
    fails(cli("layer", "commit", "w", "new"), 1, contains="mounted")
    # busy
    proc = subprocess.Popen(["sleep", "60"], cwd=mp)
    try:
        fails(cli("ws", "unmount", "w"), 1, contains="busy")
        fails(cli("ws", "rm", "w"), 1)
        assert os.path.ismount(mp)
    finally:
        proc.kill()
        proc.wait()
    assert ok(cli("ws", "unmount", "w")).out == ""
    assert not os.path.ismount(mp)
    assert ok(cli("ws", "list")).out.splitlines()[0].split("\t")[1] == "unmounted"
    ok(cli("ws", "unmount", "w"))  # already unmounted: fine
    ok(cli("ws", "mount", "w"))
    assert os.path.ismount(mp)
    assert ok(cli("ws", "rm", "w")).out == ""
    assert not os.path.ismount(mp)
    assert ok(cli("ws", "list")).out == ""
    ok(cli("layer", "rm", "base"))


def test_ws_no_mount_and_custom_mountpoint(cli: Any, tmp_path: Path, busybox_tar: Path) -> None:
    _setup_base(cli, busybox_tar)
    mp = tmp_path / "deep/mnt"
    r = ok(cli("ws", "create", "w", "-l", "base", "-m", str(mp), "--no-mount"))
    assert r.out == f"{mp}\n" and not os.path.ismount(mp)
    assert ok(cli("workspace", "list")).out.split("\t")[1] == "unmounted"
    fails(cli("ws", "create", "x", "-l", "missing"), 1, contains="no such layer")
    assert "x\t" not in cli("ws", "list").out
    ok(cli("ws", "rm", "w"))


def test_ws_mount_refuses_foreign_mount(cli: Any, tmp_path: Path, busybox_tar: Path) -> None:
    _setup_base(cli, busybox_tar)
    mp = tmp_path / "mnt"
    ok(cli("ws", "create", "w", "-l", "base", "-m", str(mp), "--no-mount"))
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mp)], check=True)
    try:
        fails(cli("ws", "mount", "w"), 1, contains="something else")
        assert ok(cli("ws", "list")).out.split("\t")[1] == "unmounted"
    finally:
        subprocess.run(["umount", str(mp)], check=True)
    ok(cli("ws", "rm", "w"))


def test_materialize(cli: Any, tmp_path: Path, busybox_tar: Path) -> None:
    _setup_base(cli, busybox_tar)
    mp = tmp_path / "job/root"
    r = ok(cli("materialize", "job", "-l", "base", "-m", str(mp)))
    assert r.out == f"{mp}\n" and os.path.ismount(mp)
    ok(cli("ws", "rm", "job"))
    assert not os.path.ismount(mp)


def test_commit_roundtrip(cli: Any, root: Path, tmp_path: Path, busybox_tar: Path) -> None:
    _setup_base(cli, busybox_tar)
    mp = Path(ok(cli("ws", "create", "w", "-l", "base")).out.strip())
    (mp / "etc/hostname").write_text("changed\n")
    (mp / "new.txt").write_text("new\n")
    os.unlink(mp / "etc/group")
    subprocess.run(["rm", "-rf", str(mp / "usr/share/doc")], check=True)
    (mp / "bin/busybox").chmod(0o700)
    ok(cli("ws", "unmount", "w"))
    assert ok(cli("layer", "commit", "w", "delta")).out == "delta\n"
    info = dict(line.split("=", 1) for line in ok(cli("layer", "info", "delta")).out.splitlines())
    assert info["from_ws"] == "w" and info["parents"] == "base"
    exported = ok(cli("layer", "export", "delta", "-")).outb
    import io

    with tarfile.open(fileobj=io.BytesIO(exported)) as tf:
        got = set(tf.getnames())
    assert {"etc/.wh.group", "usr/share/.wh.doc", "new.txt", "etc/hostname", "bin/busybox"} <= got
    # the workspace stays usable
    ok(cli("ws", "mount", "w"))
    assert (mp / "new.txt").read_text() == "new\n"
    ok(cli("ws", "unmount", "w"))
    # a fresh workspace over [delta, base] shows the same view
    mp2 = Path(ok(cli("ws", "create", "v", "-l", "delta", "-l", "base")).out.strip())
    assert (mp2 / "etc/hostname").read_text() == "changed\n"
    assert not (mp2 / "etc/group").exists()
    assert not (mp2 / "usr/share/doc").exists()
    assert (mp2 / "usr/share").is_dir()
    assert (mp2 / "bin/busybox").stat().st_mode & 0o777 == 0o700
    ok(cli("ws", "rm", "v"))
    ok(cli("ws", "rm", "w"))


def test_layer_rm_goes_by_name(cli: Any, root: Path, tmp_path: Path) -> None:
    """A workspace holds the names it was given: another name for the same content can go,
    and the tree stays while the workspace uses it."""
    tar = make_tar(tmp_path / "t.tar", {"f": b"same"})
    ok(cli("layer", "import", str(tar), "x"))
    ok(cli("layer", "import", str(tar), "y"))
    ok(cli("ws", "create", "w", "-l", "x", "--no-mount"))
    fails(cli("layer", "rm", "x"), 1, contains="in use by workspace w")
    assert ok(cli("layer", "rm", "y")).out == ""
    assert (Path(ok(cli("layer", "path", "x")).out.strip()) / "f").read_bytes() == b"same"
    ok(cli("ws", "mount", "w"))
    mp = ok(cli("ws", "path", "w")).out.strip()
    try:
        assert (Path(mp) / "f").read_bytes() == b"same"
    finally:
        ok(cli("ws", "rm", "w"))
    ok(cli("layer", "rm", "x"))
    assert os.listdir(root / "layers") == []


@pytest.mark.parametrize("corruption", ["meta-dir", "meta-missing", "no-lowers"])
def test_layer_rm_fails_closed_on_corrupt_workspace(
    cli: Any, root: Path, tmp_path: Path, corruption: str
) -> None:
    """What a workspace uses is unknown when its meta cannot be read: no layer is removed
    (overlayd's contract), the workspace is listed flagged, fsck reports it, and only
    `ws rm --force` removes it."""
    ok(cli("layer", "import", str(make_tar(tmp_path / "t.tar", {"f": b"1"})), "base"))
    ok(cli("layer", "import", str(make_tar(tmp_path / "u.tar", {"g": b"2"})), "other"))
    ok(cli("ws", "create", "w", "-l", "base", "--no-mount"))
    meta = root / "workspaces/w/meta"
    meta.unlink()
    if corruption == "meta-dir":
        meta.mkdir()
    elif corruption == "no-lowers":
        meta.write_text("name=w\nmounted=0\n")
    for layer in ("base", "other"):  # unused or not: neither can be proven unused
        fails(cli("layer", "rm", layer), 1, contains="workspace w")
    assert sorted(line.split("\t")[0] for line in ok(cli("layer", "list")).out.splitlines()) == [
        "base",
        "other",
    ]
    assert len(os.listdir(root / "layers")) == 2
    fails(cli("gc"), 1, contains="workspace w")
    assert ok(cli("ws", "list")).out == "w\tcorrupt\t-\t-\n"
    assert json.loads(ok(cli("ws", "list", "--json")).out)[0]["problem"]
    r = cli("fsck")
    assert r.rc == 1 and "workspace w: " in r.out
    fails(cli("ws", "info", "w"), 1, contains="--force")
    fails(cli("ws", "rm", "w"), 1, contains="--force")
    assert ok(cli("ws", "rm", "--force", "w")).out == ""
    assert ok(cli("ws", "list")).out == ""
    ok(cli("layer", "rm", "base"))
    ok(cli("layer", "rm", "other"))
    assert ok(cli("fsck")).rc == 0


def test_ws_rm_force_unmounts_a_corrupt_workspace(cli: Any, root: Path, tmp_path: Path) -> None:
    ok(cli("layer", "import", str(make_tar(tmp_path / "t.tar", {"f": b"1"})), "base"))
    mp = tmp_path / "mnt"
    ok(cli("ws", "create", "w", "-l", "base", "-m", str(mp)))
    try:
        (root / "workspaces/w/meta").write_text("name=w\n")
        assert json.loads(ok(cli("ws", "list", "--json")).out)[0]["mounted"] is True
        fails(cli("ws", "rm", "w"), 1, contains="--force")
        ok(cli("ws", "rm", "--force", "w"))
        assert not os.path.ismount(mp)
        assert not (root / "workspaces/w").exists()
    finally:
        if os.path.ismount(mp):
            subprocess.run(["umount", str(mp)], check=True)


def test_workspace_meta_in_overlayd_format_reads(cli: Any, root: Path, tmp_path: Path) -> None:
    """`lowers=` alone proves what a workspace uses (overlayd writes name, mounted, lowers)."""
    ok(cli("layer", "import", str(make_tar(tmp_path / "t.tar", {"f": b"1"})), "base"))
    ok(cli("layer", "import", str(make_tar(tmp_path / "u.tar", {"g": b"2"})), "other"))
    ok(cli("ws", "create", "w", "-l", "base", "--no-mount"))
    (root / "workspaces/w/meta").write_text("name=w\nmounted=0\nlowers=base\n")
    fails(cli("layer", "rm", "base"), 1, contains="in use by workspace w")
    ok(cli("layer", "rm", "other"))
    assert ok(cli("fsck")).out.endswith("ok\n")
    mp = root.resolve() / "workspaces/w/merged"
    assert ok(cli("ws", "list")).out == f"w\tunmounted\t{mp}\tbase\n"
    ok(cli("ws", "mount", "w"))  # its layers are looked up by name
    try:
        assert (mp / "f").read_bytes() == b"1"
    finally:
        ok(cli("ws", "rm", "w"))
    assert not os.path.ismount(mp)
    ok(cli("layer", "rm", "base"))


def test_absolute_member_names_per_entry_point(cli: Any, root: Path, tmp_path: Path) -> None:
    """tophan strips the leading / like GNU tar and says so once; overlayd refuses."""
    tar = make_tar(tmp_path / "abs.tar", {"/abs/p": b"x", "/abs/q": b"y"})
    r = cli("layer", "import", str(tar), "stripped")
    assert r.rc == 0 and r.out == "stripped\n"
    assert r.err == "tophan: removed leading '/' from member names\n"
    assert (Path(ok(cli("layer", "path", "stripped")).out.strip()) / "abs/p").read_bytes() == b"x"
    r = run_cli("layer", "import", str(tar), "refused", prog="overlayd", root=root)
    fails(r, 1, "overlayd", contains="absolute")
    fails(cli("layer", "info", "refused"), 1, contains="no such layer")
    assert os.listdir(root / "tmp") == []


def test_file_over_symlink_per_entry_point(cli: Any, root: Path, tmp_path: Path) -> None:
    import io

    tar = tmp_path / "same.tar"
    with tarfile.open(tar, "w") as tf:
        link = tarfile.TarInfo("evil")
        link.type = tarfile.SYMTYPE
        link.linkname = str(tmp_path / "outside")
        tf.addfile(link)
        file = tarfile.TarInfo("evil")
        file.size = 2
        tf.addfile(file, io.BytesIO(b"in"))
    ok(cli("layer", "import", str(tar), "replaced"))
    assert (Path(ok(cli("layer", "path", "replaced")).out.strip()) / "evil").read_bytes() == b"in"
    r = run_cli("layer", "import", str(tar), "refused", prog="overlayd", root=root)
    fails(r, 1, "overlayd", contains="symlink")
    assert not (tmp_path / "outside").exists()
    fails(cli("layer", "info", "refused"), 1)


def test_layers_by_digest(cli: Any, root: Path, tmp_path: Path) -> None:
    """Every -l (and LAYER argument) takes a digest, full or a unique prefix of >= 12 hex
    digits; what holds a layer by digest keeps its tree after its names are gone."""
    ok(cli("layer", "import", str(make_tar(tmp_path / "t.tar", {"f": b"1"})), "base"))
    digest = json.loads(ok(cli("layer", "info", "base", "--json")).out)["digest"]
    hexd = digest[7:]
    ok(cli("ws", "create", "full", "-l", digest, "--no-mount"))
    ok(cli("ws", "create", "short", "-l", hexd[:12], "--no-mount"))
    ok(cli("ws", "create", "prefixed", "-l", f"sha256:{hexd[:16]}", "--no-mount"))
    lowers = {row.split("\t")[0]: row.split("\t")[3] for row in cli("ws", "list").out.splitlines()}
    assert lowers == {"full": digest, "prefixed": digest, "short": digest}  # held by digest
    fails(cli("ws", "create", "x", "-l", hexd[:11], "--no-mount"), 1, contains="no such layer")
    fails(cli("ws", "create", "x", "-l", "sha256:nothex", "--no-mount"), 2, contains="invalid")
    ok(cli("image", "create", "img", "-l", hexd[:12]))
    # workspaces and the image hold the digest, not the name: the name can go
    ok(cli("layer", "rm", "base"))
    assert ok(cli("layer", "list")).out == ""
    info = json.loads(ok(cli("layer", "info", hexd[:12], "--json")).out)
    assert info["digest"] == digest and (Path(info["path"]) / "f").read_bytes() == b"1"
    row = ok(cli("layer", "list", "--all")).out.splitlines()
    assert len(row) == 1 and row[0].startswith(f"-\t{digest}\t") and row[0].endswith("\timg:latest")
    listed = json.loads(ok(cli("layer", "list", "--all", "--json")).out)
    assert listed[0]["name"] is None and listed[0]["images"] == ["img:latest"]
    # a prefix two stored layers share is refused, in one line
    (root / "layers" / (hexd[:12] + "0" * 52)).mkdir()
    fails(cli("layer", "info", hexd[:12]), 2, contains="ambiguous")
    assert ok(cli("layer", "info", hexd[:13] if hexd[12] != "0" else digest)).rc == 0
    (root / "layers" / (hexd[:12] + "0" * 52)).rmdir()
    for ws in ("full", "short", "prefixed"):
        ok(cli("ws", "rm", ws))
    ok(cli("image", "rm", "img"))
    ok(cli("gc"))
    assert os.listdir(root / "layers") == []


def test_run_takes_a_layer_digest(cli: Any, busybox_tar: Path) -> None:
    ok(cli("layer", "import", str(busybox_tar), "base"))
    digest = json.loads(ok(cli("layer", "info", "base", "--json")).out)["digest"]
    r = cli("run", "-l", digest[7:19], "--", "echo", "hi")
    assert r.rc == 0 and r.out == "hi\n", r.err


def test_deep_tree_through_every_command(cli: Any, root: Path, tmp_path: Path) -> None:
    """Issue 8 #10: a legal layer 1500 directories deep (past Python's recursion limit) is
    imported, verified, exported, checked, put in an image and removed; gc and fsck stay
    usable and nothing is left in tmp/."""
    import io

    depth = 1500
    tar = tmp_path / "deep.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(1, depth + 1):
            ti = tarfile.TarInfo("/".join(["d"] * i))
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(ti)
        ti = tarfile.TarInfo("/".join(["d"] * depth + ["bottom"]))
        ti.size, ti.mode, ti.mtime = 3, 0o644, 1_700_000_000
        tf.addfile(ti, io.BytesIO(b"hi\n"))
    try:
        _deep_tree_commands(cli, root, tmp_path, tar)
    finally:
        # Whatever a failure left: pytest's own clean-up (shutil, recursive) cannot remove it.
        from tophan._internal.fs import rmtree

        rmtree(str(root))


def _deep_tree_commands(cli: Any, root: Path, tmp_path: Path, tar: Path) -> None:
    ok(cli("layer", "import", str(tar), "deep"))
    ok(cli("layer", "verify", "deep"))
    ok(cli("fsck"))
    ok(cli("layer", "export", "deep", str(tmp_path / "again.tar")))
    ok(cli("layer", "import", str(tmp_path / "again.tar"), "deep2"))
    digest = json.loads(ok(cli("layer", "info", "deep", "--json")).out)["digest"]
    assert json.loads(ok(cli("layer", "info", "deep2", "--json")).out)["digest"] == digest
    ok(cli("image", "create", "deep-img", "-l", "deep"))
    ok(cli("image", "rm", "deep-img"))
    ok(cli("layer", "rm", "deep"))
    ok(cli("layer", "rm", "deep2"))
    ok(cli("gc"))
    ok(cli("fsck"))
    assert os.listdir(root / "tmp") == []
    assert not os.listdir(root / "layers")
