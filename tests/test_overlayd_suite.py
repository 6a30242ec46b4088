"""The C tool overlayd's own test suite, run against our `overlayd` entry point.

``tests/data/overlayd/test.sh`` is overlayd's ``tests/test.sh`` (its header gives the source),
changed only where marked ``# tophan:``. It is meant to run unprivileged (it mounts inside
``unshare -Urm`` and expects a plain ``ws create`` to be refused), so a real unprivileged user
runs it, with ``TOPHAN_KEEP_GOING=1``: every step gets a verdict instead of the run stopping at
the first failure.

Every step must pass except the checks allowed below, each with its reason: they test overlayd's
implementation (its store layout, its staging names, fault injection into its own system calls,
its README), not the command-line contract tophan keeps. Nothing here is xfail: a failure is a
gap in that contract.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rootless import RootlessUser, run_as_user

pytestmark = pytest.mark.rootless

SUITE = Path(__file__).resolve().parent / "data" / "overlayd"

# Whole steps about overlayd's implementation.
INTERNAL_STEPS = {
    "layer create refuses pre-staged tmp directory": (
        "plants .overlayd/layers/.tmp.<name>.<pid>, overlayd's staging directory; tophan stages "
        "elsewhere, so nothing collides and the layer is created"
    ),
    "layer import is atomic when meta writes fail": (
        "LD_PRELOADs fault_meta.c, which fails open() of a file named `meta` in a `.tmp.*` dir: "
        "overlayd's staging file, which tophan never opens"
    ),
    "layer commit is atomic when meta writes fail": "the same fault_meta.c injection",
    "opaque xattr failures abort layer import": (
        "LD_PRELOADs fault_xattr.c, which fails setxattr(trusted.overlay.opaque); unprivileged, "
        "tophan writes user.overlay.opaque instead"
    ),
    "documentation guard": "greps overlayd's own README.md for its orchestration example",
}

# Single checks, inside steps that otherwise test the contract: (step, FAIL line regex, reason).
INTERNAL_CHECKS = [
    (
        "layer rm fails closed when workspace meta cannot prove non-use",
        r" layer removed( \[|$)",
        "[[ -d .overlayd/layers/<name> ]]: overlayd's layout; tophan seals a layer when a "
        "workspace first uses it, and its tree is then layers/<digest>/tree",
    ),
    (
        "ws_create_common rolls back workspace dir when mount setup fails",
        r"missing 'contains unsafe'",
        "overlayd's own limit (its mount option string cannot carry ':'); tophan passes each "
        "lower dir with lowerdir+ and fails here only because the user may not mount",
    ),
    (
        "import converts docker opaque markers to overlay opaque directories",
        r"\bopq_unavailable\b",
        "without trusted.* xattrs (unprivileged) overlayd refuses opaque markers; tophan records "
        "them as user.overlay.opaque and mounts with userxattr",
    ),
]

# What the steps above leave in the store when their checks fail (the suite never removes
# them), and the cleanup checks that count it.
LEFTOVER_LAYERS = {
    "collision",
    "import_fault",
    "commit_fault",
    "opq_fault",
    "opq_unavailable",
}
CLEANUP_CHECKS = [
    ("layer cleanup", r"\(layer list count\)"),
    ("no leftovers in store", r"\(store leftovers\)"),
]

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LEFTOVERS = re.compile(r"^tophan: leftovers: (.*)$")


@dataclass
class Step:
    name: str
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def script_steps() -> list[str]:
    text = (SUITE / "test.sh").read_text()
    return re.findall(r'^\s*step "(.+)"$', text, re.MULTILINE)


def parse(output: str) -> tuple[list[Step], dict[str, list[str]] | None]:
    steps = [Step("(before the first step)")]
    leftovers = None
    for line in ANSI.sub("", output).splitlines():
        if line.startswith("== "):
            steps.append(Step(line[3:]))
        elif line.startswith("FAIL: "):
            steps[-1].failures.append(line[6:])
        elif m := LEFTOVERS.match(line):
            leftovers = {
                key: [v for v in value.split(",") if v]
                for key, _, value in (item.partition("=") for item in m[1].split())
            }
        steps[-1].lines.append(line)
    return steps, leftovers


def allowed(step: str, failure: str, leftovers: dict[str, list[str]] | None) -> bool:
    if step in INTERNAL_STEPS:
        return True
    if any(s == step and re.search(rx, failure) for s, rx, _ in INTERNAL_CHECKS):
        return True
    if any(s == step and re.search(rx, failure) for s, rx in CLEANUP_CHECKS):
        # Only layers the allowed failures leave behind (no workspace), and no more than a dir
        # per layer left.
        if leftovers is None:
            return False
        layers = leftovers.get("layers", [])
        return (
            set(layers) <= LEFTOVER_LAYERS
            and not leftovers.get("workspace_dirs")
            and len(leftovers.get("layer_dirs", [])) <= len(layers)
        )
    return False


def test_overlayd_suite_unprivileged(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    user = rootless_user
    if not user.can_unshare:
        pytest.skip("the suite mounts inside `unshare -Urm`: user namespaces are disabled here")
    suite = rootless_dir / "overlayd"
    shutil.copytree(SUITE, suite)
    for path in (suite, *suite.iterdir()):
        os.chown(path, user.uid, user.gid)
    try:
        p = run_as_user(
            user,
            ["bash", "-c", 'exec bash "$0" 2>&1', str(suite / "test.sh")],
            unshare=False,
            env={"OVERLAYD_BIN": str(user.bin / "overlayd"), "TOPHAN_KEEP_GOING": "1"},
            timeout=120,
        )
    finally:
        # The suite's symlink-escape targets, should it have died before removing them.
        for path in Path("/tmp").glob("overlayd-pwn-*"):
            if path.lstat().st_uid == user.uid:
                shutil.rmtree(path, ignore_errors=True)

    steps, leftovers = parse(p.stdout)
    problems = []
    ran = {s.name for s in steps}
    missing = [name for name in script_steps() if name not in ran]
    if missing:
        problems.append(f"steps that never ran (the script stopped early): {missing}")
    for step in steps:
        bad = [f for f in step.failures if not allowed(step.name, f, leftovers)]
        if bad:
            detail = "\n".join(f"    {line}" for line in step.lines[:40])
            problems.append(f"step {step.name!r}:\n{detail}")
    if leftovers is None:
        problems.append("the suite printed no `tophan: leftovers:` line")
    assert not problems, (
        f"overlayd's suite: {len(problems)} problem(s) (rc {p.returncode}, "
        f"leftovers {leftovers})\n\n" + "\n\n".join(problems)
    )
