"""``tophan run``: docker-run-style flags -> ``RunOptions`` -> a runtime Spec -> run it, exit
with its code.

The flag table is shared with ``tophan app create`` (apps take the same flags plus restart and
health options), so names follow ``docker run``/``podman run`` wherever they have one; each
flag's key is the ``RunOptions.update`` name it sets.
"""

from __future__ import annotations

import os
import sys

from tophan.cli.main import APP_HEALTH_FLAGS
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from tophan._internal.root import StoreRoot
    from tophan.cli.main import Cli
    from tophan.run.container import Spec
    from tophan.run.options import RunOptions
    from tophan.store import Store

RUN_USAGE = """\
usage: tophan run [options] IMAGE [CMD [ARG...]]
       tophan run [options] -l TOP [-l LAYER...] [--] CMD [ARG...]

Runs CMD in a fresh, isolated, ephemeral view of the layers (like `docker run --rm`) and
exits with its exit code (128+N when killed by signal N; 125 for any failure before CMD
starts: a bad option, a missing image, a container that could not be set up; 126/127 when CMD
cannot be run / is not found). Options go before IMAGE; what follows IMAGE is the command.

stack:    -l, --layer L           layer, top first (repeat); or name an IMAGE instead
          --keep-upper DIR        keep the writable layer's changes in DIR afterwards
process:  -e, --env K[=V]         environment (repeat); --env-file FILE
          -w, --workdir DIR       -u, --user USER[:GROUP]     --entrypoint CMD
          --ulimit NAME=SOFT[:HARD]   --hostname NAME   --name NAME
          --init                  a small init as pid 1: reaps zombies, forwards signals
          -i, --interactive       pass your stdin (without it the container's is /dev/null)
          -t, --tty               a terminal of its own (TERM=xterm), proxied to yours
mounts:   -v, --volume SRC:DST[:ro]   (SRC: absolute host path, or a volume name)
          --tmpfs DST             --read-only (read-only root)
network:  --network none|host|private|NAME   (none: only a loopback interface; the default;
                                  private: the default network, tophan0; see `network ls`)
          -p, --publish [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]   (repeat; ranges a-b:c-d)
          -P, --publish-all       every port the image EXPOSEs, on free host ports
limits:   -m, --memory SIZE       --memory-swap SIZE   --cpus N   -c, --cpu-shares N
          --cpuset-cpus LIST      --cpuset-mems LIST   --pids-limit N   --blkio-weight N
          --device-read-bps|--device-write-bps|--device-read-iops|--device-write-iops DEV:RATE
          --no-limits             run without limits where no cgroup can be had (rootless)
security: --cap-add CAP  --cap-drop CAP  (ALL allowed)   --privileged
          --security-opt seccomp=unconfined | no-new-privileges=false
trust:    --verify-again          check the image's signatures in its registry under the
                                  policy now, not what its pull recorded (docs/trust.md)
          --scan-policy SEV       refuse an image with vulnerabilities at or above SEV (its
                                  last `tophan scan`; also scan.fail_on in the store's config)
accepted for habit's sake: --rm (always). The container never holds your terminal (it
could type into it): without -t, a terminal of yours is proxied through pipes.
"""

# flag -> (key, takes a value, repeatable)
FLAGS: dict[str, tuple[str, bool, bool]] = {
    "-l": ("layer", True, True),
    "--layer": ("layer", True, True),
    "-e": ("env", True, True),
    "--env": ("env", True, True),
    "--env-file": ("env_file", True, True),
    "-v": ("volume", True, True),
    "--volume": ("volume", True, True),
    "--tmpfs": ("tmpfs", True, True),
    "-w": ("workdir", True, False),
    "--workdir": ("workdir", True, False),
    "-u": ("user", True, False),
    "--user": ("user", True, False),
    "--entrypoint": ("entrypoint", True, False),
    "--hostname": ("hostname", True, False),
    "--name": ("name", True, False),
    "--network": ("network", True, False),
    "--net": ("network", True, False),
    "-p": ("publish", True, True),
    "--publish": ("publish", True, True),
    "-P": ("publish_all", False, False),
    "--publish-all": ("publish_all", False, False),
    "--ulimit": ("ulimit", True, True),
    "--keep-upper": ("keep_upper", True, False),
    "-m": ("memory", True, False),
    "--memory": ("memory", True, False),
    "--memory-swap": ("memory_swap", True, False),
    "--cpus": ("cpus", True, False),
    "-c": ("cpu_shares", True, False),
    "--cpu-shares": ("cpu_shares", True, False),
    "--cpuset-cpus": ("cpuset_cpus", True, False),
    "--cpuset-mems": ("cpuset_mems", True, False),
    "--pids-limit": ("pids_limit", True, False),
    "--blkio-weight": ("blkio_weight", True, False),
    "--device-read-bps": ("device_read_bps", True, True),
    "--device-write-bps": ("device_write_bps", True, True),
    "--device-read-iops": ("device_read_iops", True, True),
    "--device-write-iops": ("device_write_iops", True, True),
    "--cap-add": ("cap_add", True, True),
    "--cap-drop": ("cap_drop", True, True),
    "--security-opt": ("security_opt", True, True),
    "--privileged": ("privileged", False, False),
    "--read-only": ("read_only", False, False),
    "--no-limits": ("no_limits", False, False),
    "--init": ("init", False, False),
    "--rm": ("rm", False, False),
    "-d": ("detach", False, False),
    "--detach": ("detach", False, False),
    "-i": ("interactive", False, False),
    "--interactive": ("interactive", False, False),
    "-t": ("tty", False, False),
    "--tty": ("tty", False, False),
}


# Flags that only docker's habits need: accepted, and nothing to do.
HABIT_KEYS = ("rm",)


class Parsed:
    def __init__(self) -> None:
        self.opts: dict[str, Any] = {}
        self.image: str | None = None
        self.command: list[str] = []

    def run_options(self, skip: Iterable[str] = ()) -> RunOptions:
        """The options these flags give (``skip``: keys that are not run options)."""
        from tophan.run.options import RunOptions

        opts = RunOptions(image=self.image, command=self.command)
        left_out = {*HABIT_KEYS, *skip}
        opts.update({k: v for k, v in self.opts.items() if k not in left_out})
        return opts


def parse_run_args(
    argv: list[str],
    flags: dict[str, tuple[str, bool, bool]],
    what: str,
    positional: str = "IMAGE",
) -> Parsed:
    """Options up to the IMAGE (or, with -l, up to the command); the rest is the command.

    An option right after the IMAGE is refused: ``run IMG -m 64m -- true`` would otherwise run
    ``-m`` (docker's reading), which is never what was meant. A command that starts with ``-``
    goes after ``--``."""
    out = Parsed()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            rest = argv[i:]
            if not out.opts.get("layer") and out.image is None and rest:
                out.image, rest = rest[0], rest[1:]
            out.command = rest
            return out
        if not a.startswith("-") or a == "-":
            if out.opts.get("layer"):
                out.command = argv[i - 1 :]
                return out
            out.image = a
            rest = argv[i:]
            if rest[:1] == ["--"]:
                rest = rest[1:]
            elif rest and rest[0].startswith("-") and rest[0] != "-":
                raise UsageError(
                    f"{what}: options go before {positional} ({rest[0]} follows {a})",
                    f"write `tophan {what} [options] {positional} [CMD...]`; a command that"
                    f" starts with '-' goes after `--`",
                )
            out.command = rest
            return out
        i = _take_flag(out, a, argv, i, flags, what)
    return out


def _take_flag(
    out: Parsed,
    a: str,
    argv: list[str],
    i: int,
    flags: dict[str, tuple[str, bool, bool]],
    what: str,
) -> int:
    key = a.partition("=")[0]
    if key not in flags and not a.startswith("--") and len(a) > 2:
        # Clustered short booleans, like -it.
        for ch in a[1:]:
            spec = flags.get(f"-{ch}")
            if spec is None or spec[1]:
                raise UsageError(f"{what}: unknown option {a}", f"see `tophan {what} --help`")
            out.opts[spec[0]] = True
        return i
    from tophan.cli.main import take_option

    return take_option(out.opts, flags, a, argv, i, what, f"see `tophan {what} --help`")


# -- the command -------------------------------------------------------------------------------

APP_HINT = "a supervised, detached container is an app: `tophan app create NAME ...` + `app start`"
# docker run flags that only make sense for something that outlives the command: apps take them
# (app create's own table replaces these entries), `run` refuses them with a hint.
APP_ONLY_FLAGS = {
    "--restart": True, "--stop-signal": True, "--stop-timeout": True, "--log-opt": True,
    **{flag: spec[1] for flag, spec in APP_HEALTH_FLAGS.items()},
}  # fmt: skip
FLAGS.update({k: (f"app_only{k}", v, False) for k, v in APP_ONLY_FLAGS.items()})


def main(cli: Cli, command: str, argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        sys.stderr.write(RUN_USAGE)
        return 0
    import gc

    from tophan.errors import TophanError

    # The imports and the spec allocate thousands of objects that all live on: the cyclic
    # collector's passes over them cost a start ~0.9 ms (median of 6, perf_counter_ns), and find
    # nothing. It is back on before the container starts, for as long as it runs.
    gc.disable()
    try:
        from tophan.run import container as runtime

        opts, store, spec = _spec(cli, argv)
    except TophanError as e:
        e.rc = 125  # container.RC_SETUP: the import above may be what failed
        raise
    finally:
        gc.enable()
    # Our own stdout holds nothing (the container writes to the real one); flush anyway so that
    # nothing we buffered interleaves with its output.
    sys.stdout.flush()
    try:
        rc = runtime.run(store, spec, keep_upper=opts.keep_upper)
        cli.exit_now = True  # nothing is left for the interpreter's teardown (Cli.exit_now)
        return rc
    except TophanError as e:
        # Docker's contract: 125 for every failure before the command starts (126/127 are the
        # command's own: it cannot be run / is not found).
        if e.rc not in (runtime.RC_NOT_EXECUTABLE, runtime.RC_NOT_FOUND):
            e.rc = runtime.RC_SETUP
        raise


VERIFY_AGAIN = {"--verify-again": ("verify_again", False, False)}


def trusted(cli: Cli, store: Store, image: str, again: bool) -> None:
    """Refuse ``image`` if the policy in force now does not let it start (tophan.trust.record).
    With no policy file anywhere this only looks for one: nothing is read, nothing imported."""
    from tophan.trust.find import accepts_anything, policy_path

    path = policy_path(None, store.root)
    if path is not None and not again and accepts_anything(path):
        return
    if path is None:
        if again:
            raise UsageError(
                "--verify-again: there is no policy to verify against",
                "write one to $TOPHAN_POLICY, the store's policy.json or"
                " /etc/containers/policy.json",
            )
        return
    from tophan.cli.trust import check_start

    check_start(cli, store, image, path, again)


SCAN_POLICY = {"--scan-policy": ("scan_policy", True, False)}


def scan_policy(
    store: StoreRoot,
    image: str | None,
    layers: Sequence[str],
    flag: str | None,
    allow: Sequence[str],
) -> None:
    """Refuse to start what the deploy scan policy forbids (tophan.scan.policy). Without a flag
    and without a store config, nothing is imported: starts without a policy pay one stat."""
    if flag is None and not os.path.exists(store.path("config.toml")):
        return
    from tophan.scan import policy

    policy.enforce(store, image, layers, flag, allow)


def _spec(cli: Cli, argv: list[str]) -> tuple[RunOptions, Store, Spec]:
    p = parse_run_args(argv, {**FLAGS, **VERIFY_AGAIN, **SCAN_POLICY}, "run")
    if p.opts.get("detach"):
        raise UsageError("run: --detach is not supported", APP_HINT)
    for key in p.opts:
        if key.startswith("app_only"):
            raise UsageError(f"run: {key[8:]} applies to apps", APP_HINT)
    opts = p.run_options(skip=("detach", "verify_again", "scan_policy"))
    store = cli.store()
    if opts.image:
        trusted(cli, store, opts.image, bool(p.opts.get("verify_again")))
    elif p.opts.get("verify_again"):
        raise UsageError("run: --verify-again is for an IMAGE", "layers (-l) carry no signatures")
    scan_policy(store, opts.image, opts.layers, p.opts.get("scan_policy"), ())
    return opts, store, opts.spec(store, "run")
