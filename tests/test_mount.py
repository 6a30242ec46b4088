"""Overlay mounts through the new mount API: deep stacks, errors, busy mounts, legacy refusal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tophan import InUse, MountError, mount


def layers(tmp_path: Path, n: int, name_len: int = 60) -> list[str]:
    out = []
    for i in range(n):
        d = tmp_path / "layers" / (f"{i:04d}-" + "x" * name_len)
        d.mkdir(parents=True)
        (d / f"only-{i}").write_text(str(i))
        (d / "shared").write_text(str(i))
        out.append(str(d))
    return out


def upper_work(tmp_path: Path) -> tuple[str, str, str]:
    for n in ("upper", "work", "mnt"):
        (tmp_path / n).mkdir()
    return str(tmp_path / "upper"), str(tmp_path / "work"), str(tmp_path / "mnt")


def test_500_layers_with_long_paths(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 500)
    assert len(":".join(lowers)) > 4096 * 8  # far past what a legacy option string can carry
    upper, work, mnt = upper_work(tmp_path)
    mount.mount_overlay(mnt, lowers, upper, work, userxattr=False)
    try:
        assert Path(mnt, "only-0").read_text() == "0"
        assert Path(mnt, "only-499").read_text() == "499"  # the bottom layer is really there
        assert Path(mnt, "shared").read_text() == "0"  # the first lower is the top
        assert mount.is_our_overlay(mnt, upper)
    finally:
        assert mount.unmount(mnt)


def test_501_layers_refused(tmp_path: Path) -> None:
    lowers = [str(tmp_path)] * 501
    with pytest.raises(MountError, match="at most 500"):
        mount.mount_overlay(str(tmp_path), lowers, None, None, userxattr=False)


def test_legacy_string_refused_not_truncated(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 80)
    upper, work, _ = upper_work(tmp_path)
    with pytest.raises(MountError, match="kernel keeps 4095"):
        mount.legacy_options(lowers, upper, work, False)
    with pytest.raises(MountError, match="contains"):
        mount.legacy_options(["/a:b"], upper, work, False)


def test_legacy_fallback_mounts_when_it_fits(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 3, name_len=5)
    upper, work, mnt = upper_work(tmp_path)
    mount._mount_legacy(mnt, lowers, upper, work, False)
    try:
        assert sorted(os.listdir(mnt)) == ["only-0", "only-1", "only-2", "shared"]
        assert mount.is_our_overlay(mnt, upper)
    finally:
        mount.unmount(mnt)


def test_write_and_delete_lower_dir(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 2)
    Path(lowers[1], "subdir/deep").mkdir(parents=True)
    upper, work, mnt = upper_work(tmp_path)
    mount.mount_overlay(mnt, lowers, upper, work, userxattr=False)
    try:
        Path(mnt, "new").write_text("n")
        subprocess.run(["rm", "-rf", f"{mnt}/subdir"], check=True)
        os.unlink(Path(mnt, "only-1"))
    finally:
        mount.unmount(mnt)
    assert os.lstat(Path(upper, "subdir")).st_rdev == 0
    assert os.lstat(Path(upper, "only-1")).st_rdev == 0
    assert Path(lowers[1], "subdir/deep").is_dir()  # lowers untouched


def test_kernel_error_is_reported(tmp_path: Path) -> None:
    upper, work, mnt = upper_work(tmp_path)
    with pytest.raises(MountError) as info:
        mount.mount_overlay(mnt, [str(tmp_path / "missing")], upper, work, userxattr=False)
    assert "missing" in str(info.value) and "\n" not in str(info.value)


def test_busy_unmount_is_refused(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 1)
    upper, work, mnt = upper_work(tmp_path)
    mount.mount_overlay(mnt, lowers, upper, work, userxattr=False)
    fd = os.open(Path(mnt, "only-0"), os.O_RDONLY)
    try:
        with pytest.raises(InUse, match="busy"):
            mount.unmount(mnt)
        assert mount.mount_entry(mnt) is not None
    finally:
        os.close(fd)
        mount.unmount(mnt)
    assert mount.mount_entry(mnt) is None
    assert mount.unmount(mnt) is False


def test_foreign_mounts_are_not_ours(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 1)
    upper, work, mnt = upper_work(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", mnt], check=True)
    try:
        assert not mount.is_our_overlay(mnt, upper)
        entry = mount.mount_entry(mnt)
        assert entry is not None and entry.fstype == "tmpfs"
    finally:
        mount.unmount(mnt)
    other_upper = tmp_path / "other-upper"
    other_upper.mkdir()
    mount.mount_overlay(mnt, lowers, str(other_upper), work, userxattr=False)
    try:
        assert not mount.is_our_overlay(mnt, upper)
        assert mount.is_our_overlay(mnt, str(other_upper))
    finally:
        mount.unmount(mnt)


def test_mountpoint_with_spaces_and_escapes(tmp_path: Path) -> None:
    lowers = layers(tmp_path, 1)
    upper, work, _ = upper_work(tmp_path)
    mnt = tmp_path / "a dir, with\tspecial\\chars"
    mnt.mkdir()
    mount.mount_overlay(str(mnt), lowers, upper, work, userxattr=False)
    try:
        assert mount.is_our_overlay(str(mnt), upper)
    finally:
        mount.unmount(str(mnt))
