"""Store-wide housekeeping: ``gc`` (remove what nothing references) and ``fsck`` (check it all)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tophan import references
from tophan._internal import meta
from tophan._internal.fs import rmtree
from tophan.errors import TophanError

if TYPE_CHECKING:
    from tophan.store import Store


@dataclass
class GcReport:
    staging_removed: int = 0
    layers_removed: list[str] = field(default_factory=list)
    cgroups_removed: list[str] = field(default_factory=list)
    blobs_removed: list[str] = field(default_factory=list)
    leases_released: list[str] = field(default_factory=list)
    relays_stopped: int = 0


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    layers_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def gc(store: Store) -> GcReport:
    """Remove staging leftovers, layer trees nothing references, and blobs no image needs."""
    report = GcReport()
    hidden = []
    with store.lock():
        referenced = references.layers(store)
        for digest in sorted(store.layers.stored_digests()):
            if digest not in referenced:
                path = store.hide(store.path("layers", digest.split(":", 1)[1]))
                if path is not None:
                    hidden.append(path)
                    report.layers_removed.append(digest)
        image_hidden, report.blobs_removed = store.images.gc(referenced)
        hidden += image_hidden
        # Open layers are never touched (they have no digest to be unreferenced); only a
        # directory a crash left without its ref goes, counted with the staging leftovers.
        orphans = [p for p in map(store.hide, store.layers.orphan_open_dirs()) if p is not None]
        hidden += orphans
    for path in hidden:
        rmtree(path)
    # pasta (rootless networks) outlives a run killed with SIGKILL: stop it while its pid
    # file, in the run dir, is still there
    report.relays_stopped = _stale_relays(store)
    # staging leftovers need no lock: a live one is flock'ed by its owner and skipped
    report.staging_removed = store.clean_tmp() + len(orphans)
    report.cgroups_removed = _stale_cgroups()
    report.leases_released = _stale_leases(store)
    return report


def _stale_relays(store: Store) -> int:
    from tophan.net.pasta import reclaim

    return reclaim(store)


def _stale_leases(store: Store) -> list[str]:
    """Addresses, port rules and veths of runs killed before they could release them."""
    if not os.path.isdir(store.path("networks")):
        return []  # no network was ever made: nothing to import the network code for
    from tophan.net.attach import reclaim

    return reclaim(store)


def _stale_cgroups() -> list[str]:
    from tophan.run import cgroup
    from tophan.run.container import prune_stale_cgroups

    if cgroup.unavailable(cgroup.Limits()) is not None:
        return []
    # Not the newest: a run that has just made its cgroup has no process in it yet.
    return prune_stale_cgroups(min_age=10)


def fsck(store: Store) -> FsckReport:
    """Recompute every stored layer's digest and check names and workspaces point at layers."""
    report = FsckReport()
    stored = set(store.layers.stored_digests())
    for r in store.layers.verify():
        report.layers_checked += 1
        if r.ok:
            continue
        who = ",".join(r.names) or "unnamed"
        found = r.actual or r.error
        report.problems.append(f"layer {r.digest} ({who}) changed: now {found}")
    refs = store.path("refs", "layers")
    for name in sorted(os.listdir(refs)):
        try:
            ref = meta.read(os.path.join(refs, name))
            if ref.get("state") == "open":
                # Open layers are still being written: nothing to verify, only to find.
                if not os.path.isdir(store.path("open", "layers", name)):
                    report.problems.append(f"open layer {name}: its directory is missing")
                continue
            digest = ref["digest"]
        except (OSError, KeyError) as e:
            report.problems.append(f"layer name {name}: unreadable ref ({e})")
            continue
        if digest not in stored:
            report.problems.append(f"layer name {name} points at missing layer {digest}")
    workspaces, broken = store.workspaces.scan()
    for b in broken:
        report.problems.append(f"workspace {b.name}: {b.problem}")
    for ws in workspaces:
        try:
            digests = store.workspaces.lower_digests(ws)
        except TophanError as e:
            report.problems.append(f"workspace {ws.name}: {e.message}")
            continue
        for layer, digest in zip(ws.lowers, digests, strict=True):
            if digest not in stored:
                report.problems.append(f"workspace {ws.name}: layer {layer} ({digest}) is missing")
    report.problems += store.images.fsck()
    return report
