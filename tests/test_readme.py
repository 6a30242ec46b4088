"""A new user's first walk: every command line in README.md's shell blocks, run in order.

Run as root against a fresh store in a temp dir, with the files the README assumes the user has
(a zstd rootfs tar, a config dir, an OCI archive) and a local registry in place of
registry.example.com: those are the only substitutions. Each line must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from conftest import BIN, busybox_rootfs, run_cli
from registry_fixture import REGISTRY_BIN, Registry, running

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_REGISTRY = "registry.example.com"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="walks the README as root")


def readme_commands() -> list[str]:
    """The lines of README's ```sh blocks that call tophan, continuations joined, comments cut."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    out = []
    for line in lines:
        line = _cut_comment(line).strip()
        if line and not line.startswith("make"):
            out.append(line)
    return out


def _cut_comment(line: str) -> str:
    """Cut the README's trailing ``  # ...`` comment: the first one outside quotes."""
    for m in re.finditer(r"\s{2,}#", line):
        head = line[: m.start()]
        if head.count("'") % 2 == 0 and head.count('"') % 2 == 0:
            return head
    return line


def _user_files(work: Path) -> None:
    """What the README's lines take as given, in the user's current directory."""
    rootfs = busybox_rootfs(work / "rootfs")
    (rootfs / "etc/os-release").write_text('NAME="busybox"\nID=busybox\n')
    with tarfile.open(work / "rootfs.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(rootfs, arcname=".")
    data = (work / "rootfs.tar").read_bytes()
    (work / "rootfs.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    (work / "conf/etc").mkdir(parents=True)
    (work / "conf/etc/motd").write_text("made with tophan\n")
    (work / "Containerfile").write_text(
        "FROM scratch AS base\nADD rootfs.tar /\n"
        'FROM base AS app\nCOPY conf/ /\nCMD ["cat", "/etc/motd"]\n'
    )
    # An OCI archive from elsewhere (another store here, podman save or skopeo in real life).
    other = work / "other-store"
    for args in (
        ("init", str(other)),
        ("layer", "import", str(work / "rootfs.tar"), "base"),
        ("image", "create", "app", "-l", "base"),
        ("image", "export", "app", str(work / "app.oci.tar"), "--format", "oci-archive"),
    ):
        r = run_cli(*args, root=other)
        assert r.rc == 0, f"preparing app.oci.tar: tophan {' '.join(args)}: {r.err}"


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[Registry]:
    """Stands in for registry.example.com."""
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry not installed")
    with running(Registry(tmp_path / "registry")) as reg:
        yield reg


def test_readme_commands_run(tmp_path: Path, local_registry: Registry) -> None:
    commands = readme_commands()
    assert any(c.startswith("tophan push") for c in commands), "README has no push line to walk"
    work = tmp_path / "home"
    work.mkdir()
    _user_files(work)
    store = tmp_path / "store"
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "TOPHAN_ROOT": str(store),
    }
    # Apps are on a private network by default: their supervisors start in a namespace made
    # for the test (the bridge and rules go there, never on the machine's own network); the
    # registry stays on the machine's 127.0.0.1.
    netns = f"tphrd{os.getpid() % 100000}{os.urandom(2).hex()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        for command in commands:
            line = command.replace(EXAMPLE_REGISTRY, local_registry.host)
            p = _bash(line, work, env, netns if "app start" in line else None)
            if p.returncode != 0 and "app exec" in line:
                # The server needs a moment after `app start`, as a user would find out.
                for _ in range(50):
                    time.sleep(0.1)
                    if (p := _bash(line, work, env)).returncode == 0:
                        break
            assert p.returncode == 0, f"README line `{command}` exited {p.returncode}: {p.stderr}"
    finally:
        for args in (("app", "rm", "-f", "web"), ("ws", "rm", "job")):
            run_cli(*args, root=store)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def _bash(
    line: str, cwd: Path, env: dict[str, str], netns: str | None = None
) -> subprocess.CompletedProcess[str]:
    enter = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    return subprocess.run(
        [*enter, "bash", "-e", "-o", "pipefail", "-c", line],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
