"""Package exports imported on first use (PEP 562): ``import tophan`` stays cheap, and a command
loads only the modules it calls."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def exports(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``table`` maps each exported name to the module
    that defines it."""

    def getattr_(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # __import__ rather than importlib.import_module: importlib (and warnings) cost ~1 ms
        return getattr(__import__(module, fromlist=[name]), name)

    return getattr_
