"""`make demo`: the layer core end to end on a busybox-static rootfs, through the real CLI.

import a base layer -> create and mount a workspace -> change files (add, modify, chmod, delete a
base file and a base dir) -> unmount -> commit -> export -> re-import under another name (same
digest, stored once). As a non-root user it re-runs itself inside `unshare -Urm`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
STORE = HERE.parent / "build" / "demo-store"


def tophan(*args: str, quiet: bool = False) -> str:
    cmd = [str(BIN / "tophan"), "--root", str(STORE), *args]
    if not quiet:
        print(f"  $ tophan {' '.join(args)}")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"demo failed: {p.stderr.strip()}")
    if p.stdout and not quiet:
        for line in p.stdout.rstrip("\n").splitlines():
            print(f"    {line}")
    return p.stdout


def build_base_tar(work: Path) -> Path:
    root = work / "rootfs"
    for d in ("bin", "etc", "tmp", "usr/share/doc/busybox", "var/www"):
        (root / d).mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "httpd"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/motd").write_text("welcome to the base layer\n")
    (root / "usr/share/doc/busybox/README").write_text("busybox docs\n")
    (root / "var/www/index.html").write_text("<h1>hello from the base layer</h1>\n")
    (root / "tmp").chmod(0o1777)
    out = work / "base.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(root, arcname=".")
    return out


def digest_of(name: str) -> str:
    return str(json.loads(tophan("layer", "info", name, "--json", quiet=True))["digest"])


def main() -> None:
    if os.geteuid() != 0 and os.environ.get("TOPHAN_DEMO_NS") != "1":
        env = {**os.environ, "TOPHAN_DEMO_NS": "1"}
        os.execvpe("unshare", ["unshare", "-Urm", sys.executable, __file__], env)
    if STORE.exists():
        subprocess.run(["rm", "-rf", str(STORE)], check=True)
    work = Path(tempfile.mkdtemp(prefix="tophan-demo-"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    base_tar = build_base_tar(work)
    print(
        "1. a store, and a base layer from a busybox-static rootfs"
        f" ({base_tar.stat().st_size:,} B tar)"
    )
    tophan("init", str(STORE))
    tophan("layer", "import", str(base_tar), "base")
    print("2. a workspace over it, mounted with overlayfs")
    mp = Path(tophan("ws", "create", "job", "-l", "base").strip())
    print("3. the job changes things in the merged view")
    (mp / "etc/motd").write_text("modified by the job\n")
    (mp / "app.txt").write_text("added by the job\n")
    (mp / "bin/busybox").chmod(0o700)
    (mp / "etc/passwd").unlink()
    shutil.rmtree(mp / "usr/share/doc")
    for what in (
        "added app.txt",
        "modified etc/motd",
        "chmod 700 bin/busybox",
        "deleted etc/passwd (base file)",
        "deleted usr/share/doc (base dir)",
    ):
        print(f"     - {what}")
    upper = Path(tophan("ws", "upper", "job", quiet=True).strip())
    print(
        f"   the upper dir now holds: {sorted(str(p.relative_to(upper)) for p in upper.rglob('*'))}"
    )
    tophan("ws", "list")
    print("4. unmount, and commit the changes as a new layer")
    tophan("ws", "unmount", "job")
    tophan("layer", "commit", "job", "changes")
    export = work / "changes.tar"
    print("5. export it (canonical tar: OCI whiteouts for the deletions)")
    tophan("layer", "export", "changes", str(export))
    with tarfile.open(export) as tf:
        for m in tf.getmembers():
            print(f"     {m.name}{'/' if m.isdir() else ''}  mode {m.mode:o}")
    print("6. re-import the export under another name: same digest, stored once")
    tophan("layer", "import", str(export), "changes-again")
    a, b = digest_of("changes"), digest_of("changes-again")
    print(f"     changes       {a}\n     changes-again {b}")
    trees = len(os.listdir(STORE / "layers"))
    print(f"     same digest: {a == b}; layer trees on disk: {trees} (base + changes)")
    print("7. a new workspace over [changes, base] sees the job's result")
    mp2 = Path(tophan("ws", "create", "check", "-l", "changes-again", "-l", "base").strip())
    print(
        f"     etc/motd: {(mp2 / 'etc/motd').read_text().strip()!r}; "
        f"etc/passwd exists: {(mp2 / 'etc/passwd').exists()}; "
        f"usr/share/doc exists: {(mp2 / 'usr/share/doc').exists()}"
    )
    tophan("ws", "rm", "check")
    tophan("ws", "rm", "job")
    tophan("fsck")
    if a != b or trees != 2:
        sys.exit("demo failed: the re-import was not deduplicated")
    print("done: nothing left mounted; the store is at", STORE)


if __name__ == "__main__":
    main()
