"""Container launch: `tophan run /bin/true` on a 3-layer busybox stack with memory+pids limits,
against crun, runc and podman on the same rootfs with the same limits, in one run; plus the same
launch through the Python API in-process, and the supervisors' memory with 20 apps running.

Everything lives on a private tmpfs. The runs alternate (ours, crun, runc, podman, api, ...),
each after a short untimed pause so that none inherits another's warm kernel state, and every
figure is a median. Run as root: ``python bench/launch.py [-n N] [--apps 20] [--json F]``.

crun refuses hybrid cgroup hosts (v1 controllers plus an empty v2 mount, like this one): it runs
here in a private mount namespace where /sys/fs/cgroup/unified is unmounted, so that it sees a
plain v1 host (`unshare -m` + umount, a few ms that are counted against it). podman runs with
`--runtime runc` for the same reason, `--network=none` and the ulimit flags this machine needs.
"""

from __future__ import annotations

import argparse
import json
import os
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
MEM = 64 << 20
PIDS = 64
SETTLE = 0.3  # seconds between launches (see measure())


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def make_layers(work: Path) -> tuple[Path, Path, Path]:
    from conftest import busybox_full_rootfs

    base = busybox_full_rootfs(work / "base")
    app = work / "app"
    (app / "www").mkdir(parents=True)
    (app / "www/index.html").write_text("hello\n")
    conf = work / "conf"
    (conf / "etc").mkdir(parents=True)
    (conf / "etc/httpd.conf").write_text("H:/www\n")
    return base, app, conf


def bundle(work: Path, base: Path, app: Path, conf: Path) -> Path:
    """An OCI bundle whose rootfs is the three layers merged, for crun/runc/podman."""
    b = work / "bundle"
    rootfs = b / "rootfs"
    shutil.copytree(base, rootfs, symlinks=True)
    shutil.copytree(app, rootfs, symlinks=True, dirs_exist_ok=True)
    shutil.copytree(conf, rootfs, symlinks=True, dirs_exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(b)], check=True)
    config = json.loads((b / "config.json").read_text())
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    config["linux"]["resources"] = {"memory": {"limit": MEM}, "pids": {"limit": PIDS}}
    (b / "config.json").write_text(json.dumps(config))
    return b


class Api:
    """The in-process launch: one interpreter, the spec built once, like an orchestrator."""

    def __init__(self, root: Path) -> None:
        from tophan import RunOptions
        from tophan.run.options import parse_limits
        from tophan.store import Store

        self.store = Store(str(root))
        limits = parse_limits({"memory": "64m", "pids_limit": str(PIDS)})
        opts = RunOptions(layers=["conf", "app", "base"], command=["/bin/true"], limits=limits)
        self.spec = opts.spec(self.store)

    def __call__(self) -> float:
        from tophan.run import container as runtime

        t0 = time.perf_counter()
        rc = runtime.run(self.store, self.spec)
        dt = time.perf_counter() - t0
        assert rc == 0
        return dt


def measure(work: Path, n: int) -> dict[str, float]:
    base, app, conf = make_layers(work)
    store = work / "store"
    tophan = [str(BIN / "tophan"), "--root", str(store)]
    subprocess.run([*tophan, "init"], check=True, stdout=subprocess.DEVNULL)
    for name, src in (("base", base), ("app", app), ("conf", conf)):
        subprocess.run([*tophan, "layer", "create", name, "--from", str(src)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    b = bundle(work, base, app, conf)
    subprocess.run([sys.executable, "-m", "compileall", "-f", "-q", str(HERE.parent / "src")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    seq = iter(range(1_000_000))
    cases: dict[str, Callable[[], float]] = {
        "tophan run (CLI)": lambda: timed(
            [
                *tophan,
                "run",
                "-m",
                "64m",
                "--pids-limit",
                str(PIDS),
                "-l",
                "conf",
                "-l",
                "app",
                "-l",
                "base",
                "--",
                "/bin/true",
            ]
        ),
        "crun run": lambda: timed(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run"
                f" --bundle {b} c{next(seq)}",
            ]
        ),
        "runc run": lambda: timed(["runc", "run", "--bundle", str(b), f"r{next(seq)}"]),
        "podman run --rm": lambda: timed(
            [
                "podman",
                "--runtime",
                "runc",
                "run",
                "--rm",
                "--network=none",
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
                "-m",
                "64m",
                "--pids-limit",
                str(PIDS),
                "--rootfs",
                str(b / "rootfs"),
                "/bin/true",
            ]
        ),
        "tophan API (in-process)": Api(store),
    }
    for fn in cases.values():  # warm-up: page cache, seccomp cache, podman's storage
        fn()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(n):
        for k, fn in cases.items():
            # Every launch starts cold: moving a process into a v1 cgroup waits for an RCU
            # grace period unless another move happened a moment before, so back-to-back runs
            # favour whoever comes second. podman also leaves cleanup work running after it
            # returns. The pause is not timed.
            time.sleep(SETTLE)
            samples[k].append(fn())
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


def supervisors(work: Path, count: int) -> dict[str, float]:
    """Start ``count`` apps, read each tophand's RSS and PSS, stop them."""
    tophan = [str(BIN / "tophan"), "--root", str(work / "store")]
    names = [f"bench{i}" for i in range(count)]
    for name in names:
        subprocess.run([*tophan, "app", "create", name, "-m", "16m", "--pids-limit", "8",
                        "-l", "base", "--", "sleep", "3600"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    rss, pss = [], []
    try:
        subprocess.run([*tophan, "app", "start", *names], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([*tophan, "app", "ps", "--json"], check=True, capture_output=True,
                             text=True).stdout  # fmt: skip
        for row in json.loads(out):
            r, p = _memory(int(row["supervisor"]))
            rss.append(r)
            pss.append(p)
    finally:
        subprocess.run([*tophan, "app", "rm", "-f", *names], stdout=subprocess.DEVNULL)
    return {
        "apps": count,
        "rss_mb_median": statistics.median(rss) / 1024,
        "pss_mb_median": statistics.median(pss) / 1024,
        "rss_mb_max": max(rss) / 1024,
    }


def _memory(pid: int) -> tuple[int, int]:
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=7)
    ap.add_argument("--apps", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run it as root (it compares against crun/runc/podman as root)")
    missing = [t for t in ("crun", "runc", "podman") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing peers: {', '.join(missing)} (make deps installs them)")
    work = Path(tempfile.mkdtemp(prefix="tophan-bench-launch-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(work)], check=True)
    try:
        t = measure(work, args.n)
        mem = supervisors(work, args.apps)
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)
        os.rmdir(work)
    crun, podman = t["crun run"], t["podman run --rm"]
    rows = [
        ("tophan run (CLI) / crun", t["tophan run (CLI)"] / crun, 1.5),
        ("tophan run (CLI) / podman", t["tophan run (CLI)"] / podman, 0.2),
        ("tophan API / crun", t["tophan API (in-process)"] / crun, 1.0),
    ]
    print(f"launch of /bin/true, 3 layers, -m 64m --pids-limit {PIDS}; medians of {args.n}")
    for k, v in t.items():
        print(f"  {k:28s} {v:8.1f} ms")
    for name, ratio, target in rows:
        verdict = "pass" if ratio <= target else "MISS"
        print(f"  {name:28s} {ratio:8.2f}x  (target <= {target}x) {verdict}")
    print(f"supervisors with {mem['apps']} apps: RSS median {mem['rss_mb_median']:.1f} MB"
          f" (max {mem['rss_mb_max']:.1f}), PSS median {mem['pss_mb_median']:.1f} MB"
          " (target <= 12 MB each)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"times_ms": t, "ratios": rows, "memory": mem}))


if __name__ == "__main__":
    main()
