"""Registry benchmark: tophan push/pull of a ~200 MB multi-layer image vs `skopeo copy`.

Both tools move the same image between the same endpoints in the same run, alternating
(A B A B ...), medians of ``--runs`` (default 5), everything on a private tmpfs:

- push: tophan's store -> an empty registry, vs skopeo from an OCI layout holding the same blobs
  (``skopeo copy oci:DIR docker://...``). The registry is emptied (restarted on fresh storage)
  before every run, untimed.
- pull: registry -> an empty store (download, verify, unpack, publish), vs ``skopeo copy`` into an
  OCI layout (download and verify only: no unpacking) and, for scale, into containers-storage
  with the vfs driver (which unpacks, like we do).
- dedup: the bytes tophan sends when pushing a second image that shares the base, against the
  new layer + config + manifest.

Run as root (it mounts a tmpfs): ``.venv/bin/python bench/registry.py [--runs N] [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
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

from registry_fixture import Registry  # noqa: E402
from tophan import Store  # noqa: E402
from tophan._internal import meta  # noqa: E402
from tophan.image import archive as oci  # noqa: E402
from tophan.image.registry import Options, pull, push  # noqa: E402

MB = 1 << 20


def content(n: int, seed: int, text_share: float = 0.5) -> bytes:
    """Half compressible text, half noise: gzip does real work, like on real layers."""
    text = f"line {seed} of some configuration or source code, repeated with variations\n" * 64
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        if len(out) < n * text_share:
            out += text.encode()
        else:
            block = hashlib.sha256(block).digest()
            out += hashlib.shake_256(block).digest(1 << 16)
    return bytes(out[:n])


def make_layer(store: Store, work: Path, name: str, files: dict[str, int], seed: int) -> None:
    d = work / name
    for i, (rel, size) in enumerate(files.items()):
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content(size, seed * 1000 + i))
    store.layers.import_dir(str(d), name)
    shutil.rmtree(d)


def build(store: Store, work: Path, quick: bool) -> None:
    scale = 4 if quick else 1
    # base: many small files plus a few large ones (~90 MB); three app layers (~40 MB each)
    base = {f"usr/lib/mod{i:04d}.py": 20_000 for i in range(1500 // scale)}
    base.update({f"usr/lib/big{i}.so": 10 * MB // scale for i in range(6)})
    make_layer(store, work, "base", base, 1)
    for n in (1, 2, 3):
        make_layer(
            store,
            work,
            f"app{n}",
            {f"srv/app{n}/data{i}.bin": 10 * MB // scale for i in range(4)},
            10 + n,
        )
    store.images.create("bench", ["base", "app1", "app2", "app3"])
    make_layer(store, work, "patch", {"srv/patch.bin": 8 * MB // scale}, 99)
    store.images.create("bench2", ["patch"], base="bench")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--only", choices=("push", "pull", "dedup"), action="append", help="run just these"
    )
    args = ap.parse_args()
    cases = set(args.only or ("push", "pull", "dedup"))
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it mounts a tmpfs)")
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        sys.exit("bench: needs skopeo and docker-registry")
    top = Path(tempfile.mkdtemp(prefix="tophan-regbench-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8g", "tophan-regbench", str(top)], check=True
    )
    reg: Registry | None = None
    try:
        store = Store.init(str(top / "store"))
        build(store, top / "work", args.quick)
        image = store.images.get("bench")
        total = image.size
        layout = top / "layout"
        oci.export_images(store, ["bench"], f"oci:{layout}:bench")
        tars = sum(
            int(meta.read(store.path("layers", d.split(":")[1], "meta"))["size"])
            for d in image.layers
        )
        print(
            f"image: {len(image.layers)} layers, {total / MB:.0f} MB compressed"
            f" ({tars / MB:.0f} MB of tar), {os.cpu_count()} CPUs, {args.runs} runs, medians"
        )

        reg = Registry(top / "registry")

        def fresh_registry() -> None:
            reg.stop()
            shutil.rmtree(reg.data, ignore_errors=True)
            reg.data.mkdir()
            reg.start()

        ref = lambda: reg.ref("bench/app:v1")  # noqa: E731 - the port is fixed per Registry
        opts = Options(mount=False)

        # -- push ----------------------------------------------------------------------------
        ours, peer = [], []
        for _ in range(args.runs if "push" in cases else 0):
            fresh_registry()
            ours.append(timed(lambda: push(store, "bench", ref(), options=opts)))
            fresh_registry()
            peer.append(
                timed(
                    lambda: subprocess.run(
                        [
                            "skopeo",
                            "copy",
                            "--dest-tls-verify=false",
                            f"oci:{layout}:bench",
                            f"docker://{ref()}",
                        ],
                        check=True,
                        capture_output=True,
                    )
                )
            )
        if ours:
            row("push ~200 MB, 4 layers", ours, peer, "skopeo copy oci: -> docker://")

        # -- pull ----------------------------------------------------------------------------
        if "pull" in cases:
            fresh_registry()
            push(store, "bench", ref(), options=opts)
            ours, peer, peer_cs = [], [], []
            for i in range(args.runs):
                dst = top / f"pull-store-{i}"
                Store.init(str(dst))
                ours.append(timed(lambda dst=dst: pull(Store(str(dst)), ref(), "x", options=opts)))
                shutil.rmtree(dst)
                out = top / f"pull-layout-{i}"
                peer.append(
                    timed(
                        lambda out=out: subprocess.run(
                            [
                                "skopeo",
                                "copy",
                                "--src-tls-verify=false",
                                f"docker://{ref()}",
                                f"oci:{out}:x",
                            ],
                            check=True,
                            capture_output=True,
                        )
                    )
                )
                shutil.rmtree(out)
                cs = top / f"cs-{i}"
                peer_cs.append(
                    timed(
                        lambda cs=cs: subprocess.run(
                            [
                                "skopeo",
                                "copy",
                                "--src-tls-verify=false",
                                f"docker://{ref()}",
                                f"containers-storage:[vfs@{cs}/root+{cs}/run]localhost/x:latest",
                            ],
                            check=True,
                            capture_output=True,
                        )
                    )
                )
                subprocess.run(["umount", "-R", str(cs)], capture_output=True)
                shutil.rmtree(cs, ignore_errors=True)
            row(
                "pull ~200 MB (unpacked into the store)",
                ours,
                peer,
                "skopeo copy docker:// -> oci:",
            )
            row("pull, same", ours, peer_cs, "skopeo -> containers-storage (vfs)")

        # -- dedup ---------------------------------------------------------------------------
        if "dedup" in cases:
            fresh_registry()
            push(store, "bench", ref(), options=opts)
            second = store.images.get("bench2")
            report = push(store, "bench2", reg.ref("bench/app:v2"), options=opts)
            new = second.layer_infos[-1]
            manifest = store.images.blobs.size(second.digest)
            expected = new.blob_size + second.config_descriptor.size + manifest
            print(
                f"second image sharing the base: sent {report.bytes_sent:,} B; new layer "
                f"{new.blob_size:,} + config {second.config_descriptor.size:,}"
                f" + manifest {manifest:,} = {expected:,} B -> "
                f"{'exactly that' if report.bytes_sent == expected else 'MORE'}"
                f" (the image is {second.size:,} B)"
            )
    finally:
        if reg is not None:
            reg.stop()
        subprocess.run(["umount", "-R", str(top)], check=False)
        os.rmdir(top)


def row(case: str, ours: list[float], peer: list[float], what: str) -> None:
    a, b = statistics.median(ours), statistics.median(peer)
    print(
        f"{case:40s} ours {a * 1000:7.0f} ms   {what:36s} {b * 1000:7.0f} ms   ratio {a / b:.2f}x"
    )


if __name__ == "__main__":
    main()
