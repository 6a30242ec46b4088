"""Named volumes: directories in the store that outlive the containers that mount them.

``<root>/volumes/<name>/data`` is what a container sees; ``meta`` beside it records when it was
made. A container that mounts a volume holds a shared ``flock`` on the volume's dir for as long
as it runs, so ``volume rm`` can tell "in use" from "idle" without any daemon keeping count, and a
crashed run releases its hold by dying.
"""

from __future__ import annotations

import fcntl
import os
import time

from tophan._internal import meta, names
from tophan._internal.fs import try_flock, write_meta
from tophan.errors import Exists, InUse, NotFound, TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan._internal.root import StoreRoot


class Volume:
    def __init__(self, name: str, path: str, created: int) -> None:
        self.name = name
        self.dir = path
        self.created = created

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created, "mountpoint": self.data}


class Volumes:
    def __init__(self, store: StoreRoot) -> None:
        self.store = store
        self.top = store.path("volumes")

    def _dir(self, name: str) -> str:
        return os.path.join(self.top, names.check(name, "volume"))

    def get(self, name: str) -> Volume:
        d = self._dir(name)
        try:
            info = meta.read(os.path.join(d, "meta"))
        except OSError as e:
            raise NotFound(f"no such volume: {name}", "see `tophan volume ls`") from e
        return Volume(name, d, int(info.get("created_at", "0")))

    def ensure(self, name: str) -> Volume:
        """The volume, created if missing (what `-v name:/path` does)."""
        try:
            return self.get(name)
        except NotFound:
            pass
        try:
            return self.create(name)
        except Exists:
            return self.get(name)

    def create(self, name: str) -> Volume:
        d = self._dir(name)
        os.makedirs(self.top, 0o755, exist_ok=True)
        staging = self.store.staging("volume")
        try:
            os.mkdir(os.path.join(staging.path, "data"), 0o755)
            created = int(time.time())
            write_meta(os.path.join(staging.path, "meta"), {"name": name, "created_at": created})
            os.chmod(staging.path, 0o755)
            with self.store.lock():
                if os.path.exists(d):
                    raise Exists(f"volume exists: {name}", "use it, or `volume rm` it first")
                os.rename(staging.path, d)
        finally:
            staging.discard()
        return Volume(name, d, created)

    def all(self) -> list[Volume]:
        try:
            entries = sorted(os.listdir(self.top))
        except FileNotFoundError:
            return []
        out = []
        for name in entries:
            try:
                out.append(self.get(name))
            except (NotFound, TophanError):
                continue
        return out

    def hold(self, name: str) -> int:
        """A shared lock on the volume for a container's lifetime; close the fd to release."""
        vol = self.ensure(name)
        fd = os.open(vol.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def remove(self, name: str) -> None:
        vol = self.get(name)
        fd = os.open(vol.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not try_flock(fd):
                raise InUse(f"volume {name} is in use by a running container", "stop it first")
            self.store.trash(vol.dir)
        finally:
            os.close(fd)
