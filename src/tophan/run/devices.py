"""The device cgroup: which device nodes a container may open, as runc and crun allow them.

A container that gains CAP_MKNOD and CAP_SYS_ADMIN (``--cap-add``) could otherwise make a node
for the host's disk in a tmpfs of its own and read it. The device cgroup stops the open(2)
whatever the node's path: on cgroup v1 through the ``devices`` controller (deny all, then the
allow list), on v2 through a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program attached to the
container's cgroup. The allow list is runc's default: creating any node (``m``) is allowed, as
in Docker, but only these may be read or written: null, zero, full, random, urandom, tty,
console, the pty master multiplexer and the container's own ptys.

Rootless containers need none of this: a user namespace cannot open a device node it made
(the kernel refuses mknod of devices there, and its mounts are nodev).
"""

from __future__ import annotations

import ctypes
import os

from tophan._internal import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

ANY = -1  # a wildcard major or minor (``*``)


class Rule:
    """``kind`` 'a' (all), 'b' (block) or 'c' (char); major/minor (ANY for ``*``); access of
    'r' 'w' 'm'. Rules only allow: what no rule allows is denied."""

    __slots__ = ("access", "kind", "major", "minor")

    def __init__(self, kind: str, major: int, minor: int, access: str) -> None:
        if kind not in ("a", "b", "c") or not access or set(access) - set("rwm"):
            raise ValueError(f"invalid device rule {kind} {major}:{minor} {access}")
        self.kind = kind
        self.major = major
        self.minor = minor
        self.access = access

    def __repr__(self) -> str:
        return f"Rule({self.v1()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.v1() == other.v1()

    __hash__ = None  # type: ignore[assignment]

    def v1(self) -> str:
        """The ``devices.allow`` line: ``c 1:3 rwm``."""
        if self.kind == "a":
            return "a"
        return f"{self.kind} {_num(self.major)}:{_num(self.minor)} {self.access}"


def _num(n: int) -> str:
    return "*" if n == ANY else str(n)


DEFAULT_RULES = (
    Rule("c", ANY, ANY, "m"),
    Rule("b", ANY, ANY, "m"),
    Rule("c", 1, 3, "rwm"),  # null
    Rule("c", 1, 5, "rwm"),  # zero
    Rule("c", 1, 7, "rwm"),  # full
    Rule("c", 1, 8, "rwm"),  # random
    Rule("c", 1, 9, "rwm"),  # urandom
    Rule("c", 5, 0, "rwm"),  # tty
    Rule("c", 5, 1, "rwm"),  # console
    Rule("c", 5, 2, "rwm"),  # ptmx
    Rule("c", 136, ANY, "rwm"),  # the ptys of the container's devpts
)


# -- cgroup v1 -----------------------------------------------------------------------------------


def v1_lines(rules: Iterable[Rule]) -> list[tuple[str, str]]:
    """(file, line) writes for a new v1 devices cgroup: deny everything, then allow each."""
    return [("devices.deny", "a"), *(("devices.allow", r.v1()) for r in rules)]


# -- cgroup v2: an eBPF program ------------------------------------------------------------------
# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }: access_type is
# (access << 16) | type, type BPF_DEVCG_DEV_BLOCK 1 / CHAR 2, access MKNOD 1 / READ 2 / WRITE 4.
_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}

# Opcodes (linux/bpf_common.h, linux/bpf.h).
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_EXIT = 0x95  # BPF_JMP | BPF_EXIT


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return (
        code.to_bytes(1, "little")
        + ((src << 4) | dst).to_bytes(1, "little")
        + off.to_bytes(2, "little", signed=True)
        + imm.to_bytes(4, "little", signed=True)
    )


def program(rules: Iterable[Rule]) -> bytes:
    """The BPF_PROG_TYPE_CGROUP_DEVICE program for ``rules`` (returns 1 to allow, 0 to deny).

    r2 = type, r3 = access, r4 = major, r5 = minor; each rule is a block of tests that jump to
    the next block on a mismatch and end in "allow"; past the last block, deny (as runc's)."""
    out = [
        _insn(_LDX_W, 2, 1, 0),
        _insn(_AND32_K, 2, imm=0xFFFF),
        _insn(_LDX_W, 3, 1, 0),
        _insn(_RSH32_K, 3, imm=16),
        _insn(_LDX_W, 4, 1, 4),
        _insn(_LDX_W, 5, 1, 8),
    ]
    for rule in rules:
        block = _rule_block(rule)
        out += block
    out += [_insn(_MOV64_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(out)


def _rule_block(rule: Rule) -> list[bytes]:
    tests: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm) of jump-if-mismatch
    pre: list[bytes] = []
    if rule.kind != "a":
        tests.append((_JNE_K, 2, 0, _TYPE[rule.kind]))
        acc = sum(_ACCESS[c] for c in set(rule.access))
        if acc != 7:
            # the access asked for must be a subset of the rule's: (r3 & acc) == r3
            pre = [_insn(_MOV32_X, 1, 3), _insn(_AND32_K, 1, imm=acc)]
        if rule.major != ANY:
            tests.append((_JNE_K, 4, 0, rule.major))
        if rule.minor != ANY:
            tests.append((_JNE_K, 5, 0, rule.minor))
    # layout: [type test] [pre + access test] [major] [minor] allow(2): offsets to block end
    body: list[bytes | tuple[int, int, int, int]] = []
    if tests and tests[0][1] == 2:
        body.append(tests.pop(0))
    if pre:
        body += pre
        body.append((_JNE_X, 1, 3, 0))
    body += tests
    body += [_insn(_MOV64_K, 0, imm=1), _insn(_EXIT)]
    n = len(body)
    insns = []
    for i, item in enumerate(body):
        if isinstance(item, bytes):
            insns.append(item)
        else:
            code, dst, src, imm = item
            insns.append(_insn(code, dst, src, off=n - i - 1, imm=imm))
    return insns


_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2


def attach(cgroup_dir: str, rules: Iterable[Rule]) -> None:
    """Load the program for ``rules`` and attach it to the v2 cgroup ``cgroup_dir``.

    The attachment holds the program: it lives until the cgroup is removed."""
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")  # device programs need no GPL helpers
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license (the rest zero)
    load = _attr(
        _u32(_BPF_PROG_TYPE_CGROUP_DEVICE),
        _u32(len(code) // 8),
        _u64(ctypes.addressof(insns)),
        _u64(ctypes.addressof(license_)),
    )
    prog = libc.bpf(_BPF_PROG_LOAD, load)
    try:
        cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags
            flags = _BPF_F_ALLOW_MULTI
            libc.bpf(
                _BPF_PROG_ATTACH, _attr(_u32(cg), _u32(prog), _u32(_BPF_CGROUP_DEVICE), _u32(flags))
            )
        finally:
            os.close(cg)
    finally:
        os.close(prog)


def _attr(*fields: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(b"".join(fields), 128)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")
