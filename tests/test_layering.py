"""The package layering (docs/architecture.md), checked on every import the AST holds.

Every import counts: top-level, inside functions, under ``if TYPE_CHECKING:``. A failure names
the importing module and line.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = SRC / "tophan"
ARCHITECTURE = SRC.parent / "docs" / "architecture.md"

# The contract, lowest first. A module may import its own unit and any unit of a lower rank, never
# one of its own rank or higher (run resolves images, so image sits below it). A unit is a
# sub-package (``layer``) or a top-level module (``store``); ``tophan`` is the root package's
# ``__init__`` and ``__main__``.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("_internal",),
    ("layer",),
    ("image",),
    ("trust",),
    ("net",),
    ("run",),
    ("app", "build"),
    ("scan",),
    ("references",),
    ("store",),
    ("maintenance",),
    ("cli",),
    ("tophan",),
]
# Only the CLI (and the entry points that start it) may import tophan.cli.
CLI_IMPORTERS = {"tophan.__main__"}
# Inside the package, the root ``tophan`` may be imported for these names only (they are defined
# there and import nothing).
ROOT_NAMES = {"__version__"}

# Exceptions to the contract, each with its reason (none today). The test fails when an entry is
# no longer needed.
ALLOWED: set[tuple[str, str]] = set()

RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def contract_line() -> str:
    """The contract as one line, which docs/architecture.md must contain verbatim."""
    return " < ".join(", ".join(f"`{u}`" for u in units) for units in LAYERS)


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "tophan"
    return parts[1]


def imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str, set[str]]]:
    """(line, imported module, names) for every tophan import in ``path``.

    ``from P import X`` counts as importing module P.X when that is a module, else P."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, set()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:
                    out.append((node.lineno, sub, set()))
                else:
                    out.append((node.lineno, target, {a.name}))
    return [(line, m, names) for line, m, names in out if m.split(".")[0] == "tophan"]


def edges() -> list[tuple[str, int, str, set[str]]]:
    mods = modules()
    return [
        (module, line, target, names)
        for module, path in mods.items()
        for line, target, names in imports(module, path, set(mods))
    ]


def where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(SRC.parent)}:{line} ({module})"


def test_package_exports_resolve() -> None:
    """Every name a package's ``__all__`` lists (lazily) can be imported."""
    import importlib

    for module in modules():
        if unit_of(module) == "tophan" and module != "tophan":
            continue
        mod = importlib.import_module(module) if module.count(".") <= 1 else None
        for name in getattr(mod, "__all__", ()):
            assert getattr(mod, name, None) is not None, f"{module}.__all__ lists {name}, missing"


def test_every_unit_is_in_the_contract() -> None:
    units = {unit_of(m) for m in modules()}
    assert units == set(RANK), (
        f"units on disk but not in LAYERS: {sorted(units - set(RANK))}; "
        f"in LAYERS but not on disk: {sorted(set(RANK) - units)}"
    )


def test_only_the_cli_imports_the_cli() -> None:
    bad = sorted(
        {
            f"{where(m, line)} imports {target}"
            for m, line, target, _ in edges()
            if unit_of(target) == "cli"
            and target != "tophan"
            and unit_of(m) != "cli"
            and m not in CLI_IMPORTERS
            and (m, target) not in ALLOWED
        }
    )
    assert not bad, "only tophan.cli may import tophan.cli:\n" + "\n".join(bad)


def test_imports_go_down_the_layers() -> None:
    bad: list[str] = []
    for m, line, target, names in edges():
        src, dst = unit_of(m), unit_of(target)
        if (m, target) in ALLOWED or src == dst:
            continue
        if target == "tophan":
            if names <= ROOT_NAMES:
                continue
            bad.append(f"{where(m, line)} imports {sorted(names)} from the root package tophan")
        elif RANK[dst] >= RANK[src]:
            bad.append(
                f"{where(m, line)} imports {target}: {src} (rank {RANK[src]}) may import only"
                f" lower layers, and {dst} is rank {RANK[dst]}"
            )
    assert not bad, f"layering {contract_line()} broken:\n" + "\n".join(dict.fromkeys(bad))


def test_no_cycle_between_units() -> None:
    graph: dict[str, dict[str, str]] = {}
    for m, line, target, _ in edges():
        src, dst = unit_of(m), unit_of(target)
        if src != dst and (m, target) not in ALLOWED and target != "tophan":
            graph.setdefault(src, {}).setdefault(dst, where(m, line))
    # A depth-first search; a back edge closes a cycle.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in graph.get(u, {}):
            if state.get(v) == 1:
                return [*stack[stack.index(v) :], v]
            if v not in state and (cycle := visit(v)):
                return cycle
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            steps = [f"{a} -> {b} at {graph[a][b]}" for a, b in itertools.pairwise(cycle)]
            raise AssertionError("import cycle between packages:\n" + "\n".join(steps))


def test_allow_list_is_still_needed() -> None:
    used = {(m, target) for m, _, target, _ in edges()}
    stale = sorted(ALLOWED - used)
    assert not stale, f"ALLOWED entries no longer needed, delete them: {stale}"


def test_architecture_doc_lists_every_module() -> None:
    text = ARCHITECTURE.read_text()
    line = contract_line()
    assert line in text, f"docs/architecture.md lacks the contract line {line}"
    on_disk = {str(p.relative_to(PKG)) for p in modules().values()}
    on_disk |= {str(p.parent.relative_to(PKG)) + "/" for p in PKG.glob("*/__init__.py")}
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", text))
    missing = sorted(on_disk - named)
    assert not missing, f"docs/architecture.md does not name these (as `path`): {missing}"
    outside = ("tests/", "bin/", "docs/", "bench/", "demo/")
    stale = sorted(n for n in named - on_disk if n.endswith(".py") and not n.startswith(outside))
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"
