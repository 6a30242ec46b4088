"""Benchmarks of the layer core against GNU tar, cp -a and a bare interpreter, in one run.

Everything runs on a private tmpfs (the root disk here discards online and slows down on repeated
create/delete). Ours and the peer alternate (A B A B ...); each figure is a median. Run as root:
``make bench`` (``--quick`` for a smoke run, ``--only NAME``, ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tophan import Store
from tophan.layer import mount

BIN = Path(sys.executable).parent
Timer = Callable[[], float]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def alternate(ours: Timer, peer: Timer, n: int) -> tuple[float, float]:
    a, b = [], []
    for _ in range(n):
        a.append(ours())
        b.append(peer())
    return statistics.median(a), statistics.median(b)


class Bench:
    def __init__(self, root: Path, quick: bool) -> None:
        self.root = root
        self.quick = quick
        self.n = 3 if quick else 5
        self.store = Store.init(str(root / "store"))
        self.results: list[dict[str, object]] = []
        self.seq = 0

    def fresh(self, prefix: str) -> Path:
        self.seq += 1
        return self.root / f"{prefix}-{self.seq}"

    def name(self) -> str:
        self.seq += 1
        return f"l{self.seq}"

    def record(self, case: str, ours: float, peer: float | None, target: float, kind: str) -> None:
        ratio = ours / peer if peer else ours * 1000
        ok = ratio <= target
        self.results.append(
            {
                "case": case,
                "ours_ms": ours * 1000,
                "peer_ms": None if peer is None else peer * 1000,
                "ratio": ratio,
                "target": target,
                "kind": kind,
                "pass": ok,
            }
        )
        peer_txt = f"{peer * 1000:9.1f}" if peer is not None else "        -"
        value = f"{ratio:6.2f}x" if peer is not None else f"{ours * 1000:6.2f}ms"
        limit = f"<= {target}{'x' if peer is not None else ' ms'}"
        print(
            f"{case:44s} {ours * 1000:9.1f} {peer_txt} {value:>9s} {limit:>10s}  "
            f"{'PASS' if ok else 'MISS'}",
            flush=True,
        )

    # -- data -----------------------------------------------------------------------------------

    def small_tree(self) -> tuple[Path, Path]:
        tree = self.root / "small-src"
        rng = random.Random(42)
        count = 2000 if self.quick else 10_000
        for i in range(count):
            d = tree / f"dir{i % 100:03d}" / f"sub{i % 7}"
            d.mkdir(parents=True, exist_ok=True)
            size = min(int(rng.expovariate(1 / 5000)), 200_000)
            (d / f"file{i:05d}.dat").write_bytes(rng.randbytes(size))
        tar = self.root / "small.tar"
        run("tar", "-cf", str(tar), "-C", str(tree), ".")
        # OCI tools write layers in sorted order, which lets import hash while it extracts
        run("tar", "--sort=name", "-cf", str(self.root / "small-sorted.tar"), "-C", str(tree), ".")
        return tree, tar

    def big_tree(self) -> tuple[Path, Path]:
        tree = self.root / "big-src"
        tree.mkdir()
        size = (100 if self.quick else 500) * 1024 * 1024
        with open(tree / "big.bin", "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(block)
        tar = self.root / "big.tar"
        run("tar", "-cf", str(tar), "-C", str(tree), ".")
        return tree, tar

    # -- cases ----------------------------------------------------------------------------------

    def import_export(self, label: str, tar: Path, target_import: float) -> None:
        layers = self.store.layers
        names: list[str] = []

        def ours_api() -> float:
            name = self.name()
            names.append(name)
            with open(tar, "rb") as f:
                t = timed(lambda: layers.import_tar(f, name))
            layers.remove(name)
            return t

        def ours_cli() -> float:
            name = self.name()
            t = timed(
                lambda: run(
                    str(BIN / "tophan"),
                    "--root",
                    self.store.root,
                    "layer",
                    "import",
                    str(tar),
                    name,
                )
            )
            layers.remove(name)
            return t

        def peer() -> float:
            dest = self.fresh("x")
            dest.mkdir()
            t = timed(lambda: run("tar", "-xf", str(tar), "-C", str(dest)))
            shutil.rmtree(dest)
            return t

        o, p = alternate(ours_cli, peer, self.n)
        self.record(f"import {label} (CLI) vs tar -xf", o, p, target_import, "ratio")
        o, p = alternate(ours_api, peer, self.n)
        self.record(f"import {label} (API) vs tar -xf", o, p, target_import, "ratio")
        sorted_tar = tar.with_name(tar.stem + "-sorted.tar")
        if sorted_tar.exists():
            tar_unsorted, tar = tar, sorted_tar
            o, p = alternate(ours_cli, peer, self.n)
            self.record(f"import {label}, sorted tar (CLI)", o, p, target_import, "ratio")
            tar = tar_unsorted

        with open(tar, "rb") as f:
            layer = layers.import_tar(f, self.name())
        tree = self.root / f"peer-tree-{label}"
        tree.mkdir()
        run("tar", "-xpf", str(tar), "-C", str(tree))

        def ours_export() -> float:
            out = self.fresh("out")
            with open(out, "wb", buffering=1 << 20) as f:
                t = timed(lambda: layers.export(layer.name, f))
            out.unlink()
            return t

        def peer_export() -> float:
            out = self.fresh("out")
            t = timed(lambda: run("tar", "-cf", str(out), "-C", str(tree), "."))
            out.unlink()
            return t

        o, p = alternate(ours_export, peer_export, self.n)
        self.record(f"export {label} vs tar -cf", o, p, 1.2, "ratio")
        shutil.rmtree(tree)

    def commit(self, small_src: Path) -> None:
        wss = self.store.workspaces
        base = self.store.layers.create("commit-base")
        ws = wss.create("cw", [base.name])
        run("cp", "-a", f"{small_src}/.", ws.mountpoint)
        wss.unmount("cw")

        def ours() -> float:
            name = self.name()
            t = timed(lambda: self.store.layers.commit("cw", name))
            self.store.layers.remove(name)
            return t

        def peer() -> float:
            dest = self.fresh("cp")
            t = timed(lambda: run("cp", "-a", ws.upper, str(dest)))
            shutil.rmtree(dest)
            return t

        o, p = alternate(ours, peer, self.n)
        self.record("commit 10k-file upper vs cp -a", o, p, 1.2, "ratio")
        wss.remove("cw")

    def path_command(self) -> None:
        self.store.layers.create("pc-base")
        self.store.workspaces.create("pc", ["pc-base"], mount=False)
        argv = [str(BIN / "tophan"), "--root", self.store.root, "ws", "path", "pc"]

        def ours() -> float:
            return timed(lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL))

        def peer() -> float:
            return timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))

        o, p = alternate(ours, peer, 15 if self.quick else 40)
        self.record("`tophan ws path` vs python -c pass", o, p, 1.5, "ratio")

    def ws_cycle(self) -> None:
        wss = self.store.workspaces
        self.store.layers.create("cy-base")
        times = []
        for i in range(10 if self.quick else 30):
            name = f"cy{i}"

            def cycle(name: str = name) -> None:
                wss.create(name, ["cy-base"])
                wss.unmount(name)
                wss.remove(name)

            times.append(timed(cycle))
        self.record(
            "in-process ws create+mount+unmount+rm", statistics.median(times), None, 3, "abs"
        )

    def deep_mount(self) -> None:
        lowers = []
        for i in range(500):
            d = self.root / "deep" / f"layer-{i:03d}-{'x' * 40}"
            d.mkdir(parents=True)
            (d / f"f{i}").write_text("x")
            lowers.append(str(d))
        up, wk, mnt = (self.root / "deep-upper", self.root / "deep-work", self.root / "deep-mnt")
        for p in (up, wk, mnt):
            p.mkdir()
        times = []
        for _ in range(self.n):
            times.append(
                timed(
                    lambda: mount.mount_overlay(str(mnt), lowers, str(up), str(wk), userxattr=False)
                )
            )
            mount.unmount(str(mnt))
        self.record("mount of a 500-layer stack", statistics.median(times), None, 50, "abs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["small", "big", "commit", "path", "cycle", "deep"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it mounts a tmpfs and overlays)")
    # Measure the tool as installed: stale bytecode would add compile time to every CLI run.
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "src"), quiet=1)
    top = Path(tempfile.mkdtemp(prefix="tophan-bench-"))
    run("mount", "-t", "tmpfs", "-o", "size=6g", "tophan-bench", str(top))
    try:
        b = Bench(top, args.quick)
        print(f"{'case':44s} {'ours ms':>9s} {'peer ms':>9s} {'ratio':>9s} {'target':>10s}")
        small_src = small_tar = None
        if args.only in (None, "small", "commit"):
            small_src, small_tar = b.small_tree()
        if args.only in (None, "small") and small_tar:
            b.import_export("10k small files", small_tar, 1.2)
        if args.only in (None, "big"):
            _, big_tar = b.big_tree()
            b.import_export("one 500 MB file", big_tar, 1.1)
        if args.only in (None, "commit") and small_src:
            b.commit(small_src)
        if args.only in (None, "path"):
            b.path_command()
        if args.only in (None, "cycle"):
            b.ws_cycle()
        if args.only in (None, "deep"):
            b.deep_mount()
        if args.json:
            args.json.write_text(json.dumps(b.results, indent=1))
    finally:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        for line in reversed(mountinfo):
            mp = line.split()[4]
            if mp.startswith(str(top) + "/"):
                subprocess.run(["umount", "-l", mp], check=False)
        subprocess.run(["umount", "-l", str(top)], check=False)
        os.rmdir(top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
