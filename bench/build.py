"""`tophan build` against `buildah bud --layers`: a cold build and a fully cached rebuild of the
same 10-step Containerfile, in one run (issue 11: cold <= 1.0x buildah, cached <= 0.5x).

Each round gives each tool a fresh store holding only the base image (made untimed), then times
a cold build and, right after, the same build again, fully cached. Rounds alternate tophan,
buildah, tophan, buildah ...; every figure is a median. Both run quiet (`-q`), buildah with
chroot isolation and vfs storage (`--isolation chroot`, the issue's form; vfs is buildah's
storage that needs no mount program), its state under the bench's directory.

Everything lives on a private tmpfs (the root disk here discards online, which slows repeated
create/delete by up to 10x). The bench runs in a mount namespace of its own: the tmpfs, and the
directories covering /var/tmp and /var/lib/containers (where buildah 1.28 writes whatever
--root says), are seen by nothing else and go away with it. Run as root:
``python bench/build.py [-n 5] [--quick] [--json FILE]``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
BIN = Path(sys.executable).parent

from build_trees import Buildah, mounts_under  # noqa: E402
from conftest import busybox_rootfs  # noqa: E402

# Ten steps: FROM, ENV, WORKDIR, RUN, COPY (a few hundred small files), COPY (a few MB), RUN,
# ARG, RUN, CMD. The RUNs write files, one deletes a file an earlier step made.
CONTAINERFILE = """\
FROM busybox
ENV APP=/app LANG=C.UTF-8
WORKDIR /app
RUN mkdir -p data && i=0; while [ $i -lt 200 ]; do echo "line $i" > data/f$i; i=$((i+1)); done
COPY small/ /app/small/
COPY big.bin /app/big.bin
RUN cat big.bin big.bin > big.twice && rm data/f0
ARG BUILD=1
RUN echo "$BUILD $APP" > build.txt && chmod 0600 build.txt
CMD ["sh", "-c", "ls /app"]
"""
STEPS = 10


def make_context(ctx: Path, small: int, big_mb: int) -> None:
    rng = random.Random(11)
    for i in range(small):
        d = ctx / "small" / f"d{i % 12:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.txt").write_bytes(rng.randbytes(rng.randint(64, 8192)))
    (ctx / "big.bin").write_bytes(rng.randbytes(big_mb << 20))
    (ctx / "Containerfile").write_text(CONTAINERFILE)


def sh(*argv: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])} ...: rc {p.returncode}\n{p.stderr}")
    return p.stdout


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = sh(*argv, env=env)
    return time.perf_counter() - t0, out


class Bench:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.ctx = top / "context"
        self.ctx.mkdir()
        self.base = busybox_rootfs(top / "base-rootfs")
        # The base as an OCI layout, exported once by a scratch store, for buildah to pull.
        seed = self.tophan_store("seed")
        self.layout = top / "base-oci"
        sh(*seed, "image", "export", "busybox", str(self.layout), "--format", "oci")
        self.seq = 0

    def tophan_store(self, name: str) -> list[str]:
        store = self.top / name
        argv = [str(BIN / "tophan"), "--root", str(store)]
        sh(*argv, "init", str(store))
        sh(*argv, "layer", "create", "bb", "--from", str(self.base))
        sh(*argv, "image", "create", "busybox", "-l", "bb", "--cmd", '["sh"]')
        return argv

    def tophan_round(self) -> tuple[float, float]:
        self.seq += 1
        store = self.top / f"tophan-{self.seq}"
        argv = self.tophan_store(store.name)
        build = [*argv, "build", "-q", "-t", "bench", str(self.ctx)]
        cold, digest = timed(build)
        cached, digest2 = timed(build)
        # A fully cached rebuild gives the same image (the rule): if it did not, the
        # second figure would not be a cached rebuild's.
        if digest.strip() != digest2.strip():
            raise SystemExit(f"bench: tophan's cached rebuild gave {digest2!r}, not {digest!r}")
        shutil.rmtree(store)
        return cold, cached

    def buildah_round(self, driver: str) -> tuple[float, float]:
        self.seq += 1
        top = self.top / f"buildah-{self.seq}"
        b = Buildah(top, private=False, driver=driver)
        try:
            b.load_layout(self.layout, "busybox:latest", "busybox")
            build = [
                *b.argv,
                *("bud", "--isolation", "chroot", "--layers", "--pull=never", "-q"),
                *("--signature-policy", str(b.policy), "-t", "bench", str(self.ctx)),
            ]
            cold, image = timed(build, env=b.env)
            cached, image2 = timed(build, env=b.env)
            if image.split()[-1] != image2.split()[-1]:
                raise SystemExit(f"bench: buildah's cached rebuild gave {image2!r}, not {image!r}")
        finally:
            b.cleanup()
            shutil.rmtree(top)
        return cold, cached


def private_namespace() -> None:
    """Re-run this script in a mount namespace of its own (see the module's doc). unshare(1)
    without --fork execs the command in the same process, so the pid marks the second run (an
    inherited variable cannot pass for it)."""
    if os.environ.get("TOPHAN_BENCH_NS") != str(os.getpid()):
        os.environ["TOPHAN_BENCH_NS"] = str(os.getpid())
        argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, *sys.argv]
        os.execvp("unshare", argv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=5, help="rounds per tool (default 5)")
    ap.add_argument("--quick", action="store_true", help="3 rounds, a smaller context")
    ap.add_argument(
        "--driver",
        choices=["overlay", "vfs", "both"],
        default="both",
        help="buildah's storage driver(s) (default both: overlay is its default as root)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it mounts a tmpfs; buildah's vfs storage keeps owners)")
    if shutil.which("buildah") is None:
        sys.exit("bench: buildah is not installed (apt-get install buildah)")
    private_namespace()
    # Measure the tool as installed: stale bytecode would add compile time to every CLI run.
    import compileall

    compileall.compile_dir(str(HERE.parent / "src"), quiet=1)
    n = 3 if args.quick else args.n
    top = Path(tempfile.mkdtemp(prefix="tophan-bench-build-"))
    sh("mount", "-t", "tmpfs", "-o", "size=4g", "tophan-bench-build", str(top))
    covered: list[str] = []
    try:
        for place, sub in (("/var/tmp", "var-tmp"), ("/var/lib/containers", "var-lib-containers")):
            if os.path.isdir(place):
                (top / sub).mkdir()
                sh("mount", "--bind", str(top / sub), place)
                covered.append(place)
        bench = Bench(top)
        small, big_mb = (100, 2) if args.quick else (400, 8)
        make_context(bench.ctx, small, big_mb)
        drivers = ["overlay", "vfs"] if args.driver == "both" else [args.driver]
        tools: dict[str, Callable[[], tuple[float, float]]] = {"tophan": bench.tophan_round}
        for d in drivers:
            tools[f"buildah ({d})"] = lambda d=d: bench.buildah_round(d)  # type: ignore[misc]
        print(f"context: {small} small files + one {big_mb} MB file; {n} rounds, alternating")
        cold: dict[str, list[float]] = {k: [] for k in tools}
        cached: dict[str, list[float]] = {k: [] for k in tools}
        for fn in tools.values():  # warm-up (page cache, bytecode, buildah's first start)
            fn()
        for i in range(n):
            line = []
            for name, fn in tools.items():
                c, k = fn()
                cold[name].append(c)
                cached[name].append(k)
                line.append(f"{name} {c * 1000:.0f}/{k * 1000:.0f}")
            print(f"  round {i + 1} (cold/cached ms): " + ", ".join(line), flush=True)
        print(f"{'case':44s} {'tophan ms':>10s} {'peer ms':>9s} {'ratio':>7s} {'target':>8s}")
        results = []
        for case, samples, target in (("cold build", cold, 1.0), ("cached rebuild", cached, 0.5)):
            ours = statistics.median(samples["tophan"]) * 1000
            for peer_name in list(tools)[1:]:
                peer = statistics.median(samples[peer_name]) * 1000
                ratio = ours / peer
                ok = ratio <= target
                label = f"{case} vs {peer_name}"
                print(
                    f"{label:44s} {ours:10.0f} {peer:9.0f} {ratio:6.2f}x {'<= ' + str(target):>8s}"
                    f"  {'PASS' if ok else 'MISS'}"
                )
                results.append(
                    {
                        "case": label,
                        "tophan_ms": ours,
                        "peer_ms": peer,
                        "ratio": ratio,
                        "target": target,
                        "pass": ok,
                    }
                )
        if args.json:
            args.json.write_text(json.dumps({"rounds": n, "results": results}, indent=1))
    finally:
        # buildah's stores go with each round; whatever a failed round left goes here, and
        # then the tmpfs (mounts below it first).
        for mp in reversed(mounts_under(top)):
            if mp != str(top):
                subprocess.run(["umount", "-l", mp], check=False)
        for place in covered:
            subprocess.run(["umount", "-l", place], check=False)
        subprocess.run(["umount", "-l", str(top)], check=False)
        os.rmdir(top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
