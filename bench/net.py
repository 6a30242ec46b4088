"""Requests per second through a published port: `tophan run --network private -p` against
`podman run -p`, the same tiny keep-alive HTTP server (bench/httpserve.c, static) inside both,
and `wrk` as the client on the host side; plus the server run directly on the host (no
container, no NAT) as the ceiling.

Everything happens in a network namespace made for the run (as the tests do: never the
machine's own network), entered with ``nsenter --net`` (``ip netns exec`` would remount /sys
and hide the cgroup mounts podman needs); the store and rootfs live on a tmpfs. Rounds
alternate tophan, podman, direct; every figure is a median. Run as root:
``python bench/net.py [-n ROUNDS] [-d SECONDS] [-c CONNECTIONS]``. Needs gcc (static libc),
wrk, podman and runc (Debian packages).

podman runs with ``--runtime runc`` and the ulimit flags this machine needs (see
bench/launch.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
BIN = Path(sys.executable).parent
PORT = 8080  # inside
TOPHAN_PORT, PODMAN_PORT, DIRECT_PORT = 18081, 18082, 18083


def wrk(ns: list[str], port: int, seconds: int, conns: int) -> float:
    out = subprocess.run(
        [*ns, "wrk", "-t2", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk failed on port {port}:\n{out}")
    return float(m[1])


def wait_port(ns: list[str], port: int) -> None:
    code = (
        "import socket, time\n"
        "end = time.time() + 20\n"
        "while True:\n"
        "    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), 1).close(); break\n"
        "    except OSError:\n"
        "        assert time.time() < end\n"
        "        time.sleep(0.05)\n"
    )
    subprocess.run([*ns, sys.executable, "-c", code], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5, help="rounds")
    ap.add_argument("-d", type=int, default=3, help="seconds per measurement")
    ap.add_argument("-c", type=int, default=16, help="wrk connections")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    for tool in ("wrk", "podman", "runc", "cc", "nsenter"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed")
    from conftest import busybox_rootfs

    work = Path(tempfile.mkdtemp(prefix="tophan-bench-net-"))
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(work)], check=True)
    netns = f"tphbench{os.getpid()}"
    ns = ["nsenter", f"--net=/run/netns/{netns}"]
    procs: list[subprocess.Popen[bytes]] = []
    tophan: list[str] = []
    try:
        rootfs = busybox_rootfs(work / "rootfs")
        server = rootfs / "bin/httpserve"
        subprocess.run(["cc", "-static", "-O2", "-o", str(server), str(HERE / "httpserve.c")],
                       check=True)  # fmt: skip
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run([*ns, "ip", "link", "set", "lo", "up"], check=True)
        store = work / "store"
        tophan = [*ns, str(BIN / "tophan"), "--root", str(store)]
        subprocess.run([*tophan, "init"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*tophan, "layer", "create", "srv", "--from", str(rootfs)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        procs.append(subprocess.Popen(
            [*tophan, "run", "--init", "--name", f"bench-net-{os.getpid()}", "--network", "private",
             "-p", f"{TOPHAN_PORT}:{PORT}", "-l", "srv", "--", "/bin/httpserve", str(PORT)],
        ))  # fmt: skip
        cid = f"tophan-bench-net-{os.getpid()}"
        subprocess.run(
            [*ns, "podman", "--runtime", "runc", "run", "-d", "--rm", "--name", cid,
             "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
             "-p", f"{PODMAN_PORT}:{PORT}", "--rootfs", str(rootfs),
             "/bin/httpserve", str(PORT)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(subprocess.Popen([*ns, str(server), str(DIRECT_PORT)]))
        for port in (TOPHAN_PORT, PODMAN_PORT, DIRECT_PORT):
            wait_port(ns, port)
            wrk(ns, port, 1, a.c)  # warm up
        runs: dict[str, list[float]] = {"tophan": [], "podman": [], "direct": []}
        ports = {"tophan": TOPHAN_PORT, "podman": PODMAN_PORT, "direct": DIRECT_PORT}
        for i in range(a.n):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                time.sleep(0.5)
                runs[name].append(wrk(ns, ports[name], a.d, a.c))
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"requests/s through a published port (wrk -c{a.c}, {a.d} s, medians of {a.n}):")
        for name in runs:
            print(f"  {name:7s} {med[name]:9.0f}  " + " ".join(f"{x:.0f}" for x in runs[name]))
        # The rounds alternate, so a round's pair saw the same machine: the median of the
        # per-round ratios is steadier than the ratio of the medians when the load drifts.
        paired = statistics.median(
            t / p for t, p in zip(runs["tophan"], runs["podman"], strict=True)
        )
        print(
            f"  tophan / podman = {med['tophan'] / med['podman']:.2f}x (medians), "
            f"{paired:.2f}x (median of the rounds' ratios); target >= 0.9x"
        )
        print(f"  tophan / direct = {med['tophan'] / med['direct']:.2f}x")
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", f"tophan-bench-net-{os.getpid()}"],
                       capture_output=True)  # fmt: skip
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if tophan:  # what a killed run left (its cgroup, lease, rules)
            subprocess.run([*tophan, "gc"], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["umount", "-l", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
