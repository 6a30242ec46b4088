"""The scanner's two speed targets (issue 13), medians of several runs:

1. the inventory of a real Debian base layer (this machine's ``/var/lib/dpkg/status``, its
   os-release, its Python dist-infos and a few thousand other files), read uncached: <= 1 s;
2. re-matching 50 images that share that layer (each with a small layer of its own on top)
   against a database, from the cached inventories, every result stored: <= 2 s in all.

The database is the real OSV records of tests/data/osv plus, so that the Debian packages have
records to be matched against, three synthetic records per source package of the base layer
(``Debian:<this release>``, ranges around the installed version): made by this script, never
mistaken for real advisories (ids ``BENCH-…``). Everything lives in a temporary directory.
``python bench/scan.py [-n 5] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tophan.scan import report, targets
from tophan.scan.inventory import Inventories, read_layer
from tophan.store import Store

OSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "osv"
FILLER_DIRS = ("/usr/share/doc", "/usr/share/perl5", "/usr/lib/python3/dist-packages")
FILLER_MAX = 4000


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def base_tar() -> bytes:
    """A Debian base layer from this machine's package database and some of its files."""
    buf = io.BytesIO()
    seen = 0
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "var/lib/dpkg/status", Path("/var/lib/dpkg/status").read_bytes())
        _add(tf, "etc/os-release", Path("/etc/os-release").read_bytes())
        for top in FILLER_DIRS:
            for dirpath, _dirs, names in os.walk(top):
                for n in names:
                    p = os.path.join(dirpath, n)
                    if seen >= FILLER_MAX or not os.path.isfile(p) or os.path.islink(p):
                        continue
                    if os.path.getsize(p) > 256 << 10:
                        continue
                    _add(tf, p, Path(p).read_bytes())
                    seen += 1
    return buf.getvalue()


def top_tar(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        meta = f"Metadata-Version: 2.1\nName: urllib3\nVersion: 1.26.{n % 19}\n".encode()
        _add(tf, f"app/venv/lib/urllib3-1.26.{n % 19}.dist-info/METADATA", meta)
        _add(tf, "app/main.py", f"print({n})\n".encode())
    return buf.getvalue()


def database(dest: Path, store: Store, base: str) -> Path:
    """The real records plus three synthetic ones per source package of the base layer."""
    inv = Inventories(store).image(targets.layers(store, [base]).stack)
    out = dest / "db"
    out.mkdir()
    with zipfile.ZipFile(out / "bench.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(OSV.rglob("*")):
            if p.suffix in (".json", ".yaml") and p.parent.name != "schema":
                zf.writestr(f"{p.parent.name}/{p.name}", p.read_bytes())
        sources = {(p.match_name, p.match_version) for p in inv.packages if p.type == "deb"}
        for i, (name, version) in enumerate(sorted(sources)):
            for k, events in enumerate(
                (
                    [{"introduced": "0"}, {"fixed": version + "+bench1"}],  # affected
                    [{"introduced": "0"}, {"fixed": "0~bench"}],  # fixed long ago
                    [{"introduced": "0"}, {"last_affected": version}],  # affected, no fix
                )
            ):
                rec = {
                    "id": f"BENCH-{i}-{k}",
                    "modified": "2026-01-01T00:00:00Z",
                    "affected": [
                        {
                            "package": {"ecosystem": inv.ecosystem, "name": name},
                            "ranges": [{"type": "ECOSYSTEM", "events": events}],
                        }
                    ],
                    "severity": [
                        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}
                    ],
                }
                zf.writestr(f"BENCH-{i}-{k}.json", json.dumps(rec))
    return out


def bench(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tophan-bench-scan-") as tmp:
        store = Store.init(os.path.join(tmp, "store"))
        base = store.layers.import_tar(io.BytesIO(base_tar()), "base").digest
        tree = store.layers.tree_path(base)
        inv_times = []
        for _ in range(n):
            t = time.perf_counter()
            inv = read_layer(base, tree, store.xattr_ns)
            inv_times.append(time.perf_counter() - t)
        debs = sum(1 for p in inv.packages if p.type == "deb")
        for i in range(50):
            store.layers.import_tar(io.BytesIO(top_tar(i)), f"top{i}")
            store.images.create(f"img{i}", ["base", f"top{i}"], compression=None)
        db_path = database(Path(tmp), store, "base")
        report.open_db(store, str(db_path)).close()  # the index, as `db update` builds it
        Inventories(store).image(targets.layers(store, ["top0", "base"]).stack)  # cached once
        rematch = []
        findings = 0
        for _ in range(n):
            t = time.perf_counter()
            db = report.open_db(store, str(db_path))
            inventories = Inventories(store)
            found = 0
            for target in targets.all_images(store):
                result = report.scan(inventories, target, db)
                report.save(store, result, db)
                found += len(result.findings)
            db.close()
            rematch.append(time.perf_counter() - t)
            findings = found
    return {
        "packages_dpkg": debs,
        "inventory_s": statistics.median(inv_times),
        "rematch_50_s": statistics.median(rematch),
        "findings_50": findings,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="runs per figure (median)")
    ap.add_argument("--json", help="save the figures to this file")
    a = ap.parse_args()
    got = bench(a.n)
    print(f"dpkg packages in the base layer: {got['packages_dpkg']}")
    inv_ok = "pass" if got["inventory_s"] <= 1.0 else "MISS"
    print(
        f"inventory of the base layer (uncached): {got['inventory_s'] * 1000:.0f} ms"
        f"  (<= 1 s {inv_ok})"
    )
    re_ok = "pass" if got["rematch_50_s"] <= 2.0 else "MISS"
    print(
        f"re-match of 50 images sharing it, results stored: {got['rematch_50_s'] * 1000:.0f} ms"
        f" ({got['findings_50']} findings)  (<= 2 s {re_ok})"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(got, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
