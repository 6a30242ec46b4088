"""The command line: parse, call the library, print. No logic lives here.

Two entry points share it: ``tophan`` and ``overlayd`` (the seed tool's contract, kept exactly:
exit 0 success, 1 runtime failure, 2 usage error; on failure stdout is empty and stderr holds one
line ``<prog>: <message>``; on success stderr is empty; help goes to stderr with exit 0).

The parser is hand-written on purpose: argparse prints multi-line usage on errors (the contract
wants one line) and costs more start-up time than a path command may spend.
"""

from __future__ import annotations

import os
import sys

from tophan import __version__
from tophan.errors import TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any, NoReturn

    from tophan.store import Store

OVERLAYD_VERSION = "0.1.0"

USAGE = """\
{prog} {version} — overlayfs layers and workspaces{extra}

usage: {prog} [--root PATH] [-v] <command> [args]

commands (each answers --help):
  layer create|list|rm|path|info|commit|import|export|verify
  ws create|list|info|path|upper|mount|unmount|rm

  init [path]                         initialize a store (safe to re-run)
  layer create <name> [--from DIR]    create an empty, open layer: fill it through `layer path`;
                                      its first use (ws, image, run, export) or `layer seal`
                                      seals it. --from DIR: a sealed copy of DIR
  layer seal <name>                   hash an open layer into the store, print its digest;
                                      sealed layers are immutable (read-only by contract)
  layer list [--all] [--json]         {list_format}
  layer rm <name>                     remove a layer name (refused while a workspace or app uses it)
  layer path <layer>                  print the layer's directory (writable only while open)
  layer info <layer> [--json]         key=value metadata: state (open|sealed), digest
  layer commit <ws> <newlayer>        turn an unmounted workspace's changes into a layer
  layer import <tar|-> <name>         import a plain, gzip or zstd tar ('-' = stdin)
  layer export <layer> <tar|-> [--compress gzip|zstd]
                                      write the layer's canonical tar ('-' = stdout)
  layer verify [layer...] [--json]    recompute digests; exit 1 if any sealed layer changed
  ws create <name> -l L1 [-l L2 ...] [-m PATH] [--no-mount]
                                      create (and mount) a workspace; first -l is the top layer
  ws list [--json]                    name<TAB>mounted|unmounted|corrupt<TAB>mountpoint<TAB>lowers
  ws info|path|upper <name>           metadata / mountpoint / upper directory
  ws mount|unmount|rm <name>          (rm --force also removes one whose meta is corrupt);
                                      `workspace` is an alias of `ws`
  materialize <name> -l L1 [-l L2 ...] -m PATH
                                      create and mount a workspace, printing PATH
  gc [--json]                         remove staging leftovers and unreferenced layers
  fsck [--json]                       check every layer's digest and every reference
  version                             print the version
  help [command [subcommand]]         print this help, or a command's (also: CMD --help)

global flags:
  --root PATH     store root (default: {root_rule})
  -v, --verbose   more detail on stderr

names: {name_rule}.
<layer> and -l also take a layer digest: sha256:<hex>, or a unique prefix of >= 12 hex digits.
"""


MORE_USAGE = """
images, containers and apps (each has --help):
  build [-t NAME] [flags] CONTEXT     an image from a Containerfile (cached; `build prune`)
  image create|list|inspect|rm|tag|import|export   OCI images from layers; archives and layouts
  push NAME [REF] / pull REF [NAME]   OCI distribution: any registry
  key generate PREFIX                 a cosign-compatible key pair (PREFIX.key, PREFIX.pub)
  sign REF --key KEY / verify REF --key PUB   sigstore signatures in the registry
  run [opts] IMAGE|-l L... [--] CMD   run CMD isolated, like `docker run --rm`
  app create|start|stop|restart|rm|ps|logs|exec|inspect
                                      supervised apps (one `tophand NAME` process each)
  volume create|ls|rm|inspect         named volumes in the store
  network create|ls|rm|inspect        private networks (bridges, subnets) for --network NAME
  sbom IMAGE|-l L... [--format cyclonedx|spdx] [-o FILE]
                                      the image's packages as CycloneDX 1.6 or SPDX 2.3 JSON
  scan IMAGE|-l L...|--all [--db PATH] [--json|--sarif] [--fail-on SEV]
                                      known vulnerabilities (OSV) of the image's packages
  db update|status                    the vulnerability database (osv.dev's exports)
"""

# Command -> (module, attribute): a handler ``(cli, argv) -> int`` or a table of subcommands.
# Imported only when used, so that path commands keep their start-up time; tophan only.
EXTENSIONS = {
    "run": ("tophan.cli.main", "run_command"),
    "app": ("tophan.cli.app", "APP_COMMANDS"),
    "volume": ("tophan.cli.app", "VOLUME_COMMANDS"),
    "network": ("tophan.cli.network", "NETWORK_COMMANDS"),
    "image": ("tophan.cli.image", "IMAGE_COMMANDS"),
    "push": ("tophan.cli.image", "push"),
    "pull": ("tophan.cli.image", "pull"),
    "build": ("tophan.cli.build", "build"),
    "key": ("tophan.cli.trust", "KEY_COMMANDS"),
    "sign": ("tophan.cli.trust", "sign"),
    "verify": ("tophan.cli.trust", "verify"),
    "sbom": ("tophan.cli.sbom", "sbom"),
    "scan": ("tophan.cli.scan", "scan"),
    "db": ("tophan.cli.scan", "DB_COMMANDS"),
}
HELP_FLAGS = ("-h", "--help")


class HelpRequested(Exception):
    """``-h``/``--help`` among a command's options: print that command's help instead."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


# The health-check flags: `image create` takes docker's; apps also check over HTTP or TCP, and
# `run` refuses all of them (they belong to something that outlives its command).
HEALTH_FLAGS: dict[str, tuple[str, bool, bool]] = {
    "--health-cmd": ("health_cmd", True, False),
    "--health-interval": ("health_interval", True, False),
    "--health-timeout": ("health_timeout", True, False),
    "--health-retries": ("health_retries", True, False),
    "--health-start-period": ("health_start_period", True, False),
    "--no-healthcheck": ("no_healthcheck", False, False),
}
APP_HEALTH_FLAGS: dict[str, tuple[str, bool, bool]] = {
    **HEALTH_FLAGS,
    "--health-http": ("health_http", True, False),
    "--health-tcp": ("health_tcp", True, False),
}


class Args:
    """Parsed arguments of one subcommand: positionals plus options by name."""

    def __init__(self) -> None:
        self.pos: list[str] = []
        self.opts: dict[str, Any] = {}

    def flag(self, name: str) -> bool:
        return bool(self.opts.get(name))


# A spec: (positional count min, max (-1 = any), {flag: (key, takes_value, repeatable)}).
Spec = tuple[int, int, dict[str, tuple[str, bool, bool]]]
JSON = {"--json": ("json", False, False)}


def parse(argv: list[str], spec: Spec, what: str) -> Args:
    lo, hi, flags = spec
    out = Args()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a.startswith("-") and a != "-" and not out.opts.get("--"):
            if a == "--":
                out.opts["--"] = True
                continue
            i = take_option(out.opts, flags, a, argv, i, what, f"see `{what} --help`")
        else:
            out.pos.append(a)
    if len(out.pos) < lo or (hi >= 0 and len(out.pos) > hi):
        raise UsageError(f"{what}: wrong number of arguments", f"see `{what} --help`")
    return out


def take_option(
    opts: dict[str, Any],
    flags: dict[str, tuple[str, bool, bool]],
    a: str,
    argv: list[str],
    i: int,
    what: str,
    hint: str,
) -> int:
    """Store option ``a`` (``--key``, ``--key=value`` or ``--key value`` at ``argv[i]``) in
    ``opts``; returns the index after what it used."""
    key, eq, inline = a.partition("=")
    spec = flags.get(key)
    if spec is None and key in HELP_FLAGS:
        raise HelpRequested(what)
    if spec is None:
        raise UsageError(f"{what}: unknown option {key}", hint)
    dest, takes_value, repeatable = spec
    if not takes_value:
        opts[dest] = not eq or inline.lower() not in ("false", "0", "no")
        return i
    if not eq:
        if i >= len(argv):
            raise UsageError(f"{what}: {key} needs a value")
        inline = argv[i]
        i += 1
    if repeatable:
        opts.setdefault(dest, []).append(inline)
    else:
        opts[dest] = inline
    return i


class Cli:
    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.root: str | None = None
        self.verbose = False
        self._store: Store | None = None
        self.out = sys.stdout
        # Set by a command that leaves nothing for the interpreter's teardown to do (`run`:
        # its container reaped, its cgroup and run dir removed): the launcher then ends the
        # process at once (``launch``).
        self.exit_now = False

    # -- helpers -------------------------------------------------------------------------------

    @property
    def overlayd(self) -> bool:
        return self.prog == "overlayd"

    def root_path(self) -> str:
        from tophan import store

        if self.root:
            return self.root
        return store.overlayd_default_root() if self.overlayd else store.default_root()

    def store(self) -> Store:
        if self._store is None:
            from tophan.store import Store

            self._store = Store(self.root_path(), overlayd=self.overlayd)
        return self._store

    def usage(self) -> str:
        from tophan._internal import names

        if self.overlayd:
            rule, extra, version = "$OVERLAYD_ROOT or ./.overlayd", "", OVERLAYD_VERSION
        else:
            rule = "$TOPHAN_ROOT, else /var/lib/tophan as root, ~/.local/share/tophan otherwise"
            extra, version = ", images, containers and apps", __version__
        if self.overlayd:
            list_format = "TAB-separated: name<TAB>created_at"
        else:
            list_format = "name digest created size open|sealed (--all: unnamed too, + images)"
        text = USAGE.format(
            prog=self.prog,
            version=version,
            extra=extra,
            root_rule=rule,
            name_rule=names.NAME_RULE,
            list_format=list_format,
        )
        return text if self.overlayd else text + MORE_USAGE

    def emit(self, text: str) -> None:
        self.out.write(text)

    def emit_json(self, obj: Any) -> None:
        import json

        self.emit(json.dumps(obj, indent=1, sort_keys=True) + "\n")

    def emit_kv(self, pairs: list[tuple[str, str]]) -> None:
        self.emit("".join(f"{k}={v}\n" for k, v in pairs))

    def log(self, text: str) -> None:
        if self.verbose:
            sys.stderr.write(f"{self.prog}: {text}\n")

    def help(self, command: str | None = None) -> int:
        """Print the overview, or ``command``'s help ("layer create"), to stderr."""
        if command is None:
            sys.stderr.write(self.usage())
            return 0
        from tophan.cli import help as helptext

        text = helptext.text(self.prog, command)
        if text is None:
            # A command without its own entry yet still answers, with a pointer to the overview.
            text = f"usage: {self.prog} {command} [args]\n(see `{self.prog} help`)\n"
        sys.stderr.write(text)
        return 0

    def hint(self, command: str) -> str:
        return f"see `{self.prog} {command} --help`"

    # -- dispatch ------------------------------------------------------------------------------

    def run(self, argv: list[str]) -> int:
        i = 0
        while i < len(argv):
            a = argv[i]
            if a == "--root" or a.startswith("--root="):
                if "=" in a:
                    self.root = a.split("=", 1)[1]
                elif i + 1 < len(argv):
                    self.root = argv[i + 1]
                    i += 1
                else:
                    raise UsageError("--root needs a value")
            elif a in ("-v", "--verbose"):
                self.verbose = True
            elif a == "--version":
                return self.cmd_version([])
            elif a in HELP_FLAGS:
                return self.help()
            elif a.startswith("-"):
                raise UsageError(f"unknown option {a}", f"see `{self.prog} --help`")
            else:
                break
            i += 1
        if i >= len(argv):
            raise UsageError("no command given", f"see `{self.prog} --help`")
        cmd, rest = argv[i], argv[i + 1 :]
        if cmd == "workspace":
            cmd = "ws"
        entry = command_table(self.overlayd).get(cmd)
        if entry is None:
            raise UsageError(f"unknown command: {cmd}", f"see `{self.prog} --help`")
        try:
            return dispatch(self, cmd, rest, resolve(entry))
        except HelpRequested as h:
            return self.help(h.command)

    # -- top-level commands --------------------------------------------------------------------

    def cmd_version(self, argv: list[str]) -> int:
        parse(argv, (0, 0, {}), "version")
        if self.overlayd:
            self.emit(f"overlayd {OVERLAYD_VERSION} (tophan {__version__})\n")
        else:
            self.emit(f"tophan {__version__}\n")
        return 0

    def cmd_help(self, argv: list[str]) -> int:
        if not argv:
            return self.help()
        command = " ".join(argv)
        group = "ws" if argv[0] == "workspace" else argv[0]
        table = command_table(self.overlayd)
        entry = table.get(group)
        subs = resolve(entry) if entry is not None else None
        known = entry is not None and (
            len(argv) == 1 or (len(argv) == 2 and isinstance(subs, dict) and argv[1] in subs)
        )
        if not known:
            raise UsageError(f"help: no such command: {command}", f"see `{self.prog} help`")
        return self.help(command)

    def cmd_init(self, argv: list[str]) -> int:
        from tophan.store import Store

        args = parse(argv, (0, 1, {}), "init")
        path = args.pos[0] if args.pos else self.root_path()
        Store.init(path, overlayd=self.overlayd)
        self.emit(f"{path}\n")
        return 0

    def cmd_gc(self, argv: list[str]) -> int:
        from tophan import maintenance

        args = parse(argv, (0, 0, JSON), "gc")
        report = maintenance.gc(self.store())
        if args.flag("json"):
            self.emit_json(
                {
                    "staging_removed": report.staging_removed,
                    "layers_removed": report.layers_removed,
                    "cgroups_removed": report.cgroups_removed,
                    "leases_released": report.leases_released,
                    "relays_stopped": report.relays_stopped,
                }
            )
        else:
            pairs = [
                ("staging_removed", str(report.staging_removed)),
                ("layers_removed", str(len(report.layers_removed))),
            ]
            if report.cgroups_removed:
                pairs.append(("cgroups_removed", str(len(report.cgroups_removed))))
            if report.leases_released:
                pairs.append(("leases_released", str(len(report.leases_released))))
            if report.relays_stopped:
                pairs.append(("relays_stopped", str(report.relays_stopped)))
            self.emit_kv(pairs)
        return 0

    def cmd_fsck(self, argv: list[str]) -> int:
        from tophan import maintenance

        args = parse(argv, (0, 0, JSON), "fsck")
        report = maintenance.fsck(self.store())
        if args.flag("json"):
            self.emit_json(
                {
                    "ok": report.ok,
                    "layers_checked": report.layers_checked,
                    "problems": report.problems,
                }
            )
        else:
            self.emit("".join(f"{p}\n" for p in report.problems))
            self.emit(f"checked {report.layers_checked} layers: ")
            self.emit("ok\n" if report.ok else f"{len(report.problems)} problems\n")
        return 0 if report.ok else 1

    # -- layer ---------------------------------------------------------------------------------

    def layer_create(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, {"--from": ("from", True, False)}), "layer create")
        _check(args.pos[0], "layer")
        layers = self.store().layers
        if "from" in args.opts:
            layer = layers.import_dir(args.opts["from"], args.pos[0])
            self.log(f"layer {layer.name} is {layer.digest}")
        else:
            opened = layers.create(args.pos[0])
            self.log(f"layer {opened.name} is open: fill {opened.path}, then use or seal it")
        self.emit(f"{args.pos[0]}\n")
        return 0

    def layer_seal(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, {}), "layer seal")
        _check(args.pos[0], "layer")
        self.emit(f"{self.store().layers.seal(args.pos[0]).digest}\n")
        return 0

    def layer_list(self, argv: list[str]) -> int:
        spec: Spec = (0, 0, {**JSON, "--all": ("all", False, False), "-a": ("all", False, False)})
        args = parse(argv, spec, "layer list")
        store = self.store()
        rows: list[Any] = list(store.layers.all())
        used_by: dict[str, list[str]] = {}
        if args.flag("all"):
            from tophan import references

            rows += store.layers.unnamed()
            used_by = references.images_by_layer(store)
        if args.flag("json"):
            items = [la.as_dict() for la in rows]
            for item in items:
                if item["name"] == item["digest"]:
                    item["name"] = None  # no name points at it
                item["created"] = _iso(item["created_at"])
                if args.flag("all"):
                    item["images"] = used_by.get(item["digest"], [])
            self.emit_json(items)
        elif self.overlayd:
            self.emit("".join(f"{la.name}\t{la.created_at}\n" for la in rows))
        else:
            for la in rows:
                name = "-" if la.name == la.digest else la.name
                size = "-" if la.size is None else la.size
                line = f"{name}\t{la.digest or '-'}\t{_iso(la.created_at)}\t{size}\t{la.state}"
                if args.flag("all"):
                    line += "\t" + (",".join(used_by.get(la.digest or "", [])) or "-")
                self.emit(line + "\n")
        return 0

    def layer_rm(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, {}), "layer rm")
        _check(args.pos[0], "layer")
        self.store().layers.remove(args.pos[0])
        return 0

    def layer_path(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, {}), "layer path")
        _check_layer(args.pos[0])
        self.emit(f"{self.store().layers.find(args.pos[0]).path}\n")
        return 0

    def layer_info(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, JSON), "layer info")
        _check_layer(args.pos[0])
        layer = self.store().layers.find(args.pos[0])
        if args.flag("json"):
            self.emit_json(layer.as_dict())
        else:
            self.emit_kv(layer.info_lines())
        return 0

    def layer_commit(self, argv: list[str]) -> int:
        args = parse(argv, (2, 2, {}), "layer commit")
        _check(args.pos[0], "workspace")
        _check(args.pos[1], "layer")
        layer = self.store().layers.commit(args.pos[0], args.pos[1])
        self.log(f"layer {layer.name} is {layer.digest}")
        self.emit(f"{layer.name}\n")
        return 0

    def layer_import(self, argv: list[str]) -> int:
        args = parse(argv, (2, 2, {}), "layer import")
        src, name = args.pos
        _check(name, "layer")
        store = self.store()

        def warn(text: str) -> None:
            sys.stderr.write(f"{self.prog}: {text}\n")

        # overlayd refuses absolute names and a file over a symlink; tophan is GNU tar's way.
        kw: dict[str, Any] = {"strict": True} if self.overlayd else {"warn": warn}
        if src == "-":
            layer = store.layers.import_tar(sys.stdin.buffer, name, label="-", **kw)
        else:
            try:
                f = open(src, "rb")  # noqa: SIM115 - closed below, after the import
            except OSError as e:
                raise TophanError(f"cannot read {src}: {e.strerror}") from e
            with f:
                layer = store.layers.import_tar(f, name, label=os.path.abspath(src), **kw)
        self.log(f"layer {layer.name} is {layer.digest}")
        self.emit(f"{layer.name}\n")
        return 0

    def layer_export(self, argv: list[str]) -> int:
        spec: Spec = (2, 2, {"--compress": ("compress", True, False)})
        args = parse(argv, spec, "layer export")
        name, dest = args.pos
        _check_layer(name)
        compress = args.opts.get("compress")
        if compress not in (None, "gzip", "zstd"):
            raise UsageError(f"layer export: unknown --compress {compress}", "use gzip or zstd")
        layers = self.store().layers
        name = layers.get(name).name  # exporting is a use: an open layer is sealed
        if dest == "-":
            sys.stdout.flush()
            with os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=1 << 20) as out:
                digest = layers.export(name, out, compress=compress)
        else:
            digest = _write_atomically(
                dest, lambda out: layers.export(name, out, compress=compress)
            )
        self.log(f"exported {name} ({digest})")
        return 0

    def layer_verify(self, argv: list[str]) -> int:
        args = parse(argv, (0, -1, JSON), "layer verify")
        for n in args.pos:
            _check_layer(n)
        results = self.store().layers.verify(args.pos or None)
        if args.flag("json"):
            self.emit_json(
                [
                    {"digest": r.digest, "names": r.names, "ok": r.ok, "actual": r.actual}
                    for r in results
                ]
            )
        else:
            for r in results:
                if r.digest is None:
                    state = "open (not sealed yet: nothing to verify)"
                else:
                    state = "ok" if r.ok else f"CHANGED (now {r.actual or r.error})"
                self.emit(f"{','.join(r.names) or '-'}\t{r.digest or '-'}\t{state}\n")
        return 0 if all(r.ok for r in results) else 1

    # -- ws ------------------------------------------------------------------------------------

    CREATE_FLAGS = {  # noqa: RUF012 - a constant table
        "-l": ("layers", True, True),
        "--layer": ("layers", True, True),
        "-m": ("mountpoint", True, False),
        "--mount": ("mountpoint", True, False),
        "--no-mount": ("no_mount", False, False),
        "--suid-dev": ("suid_dev", False, False),
    }

    def ws_create(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, self.CREATE_FLAGS), "ws create")
        return self._create(args, mount=not args.flag("no_mount"))

    def cmd_materialize(self, argv: list[str]) -> int:
        args = parse(argv, (1, 1, self.CREATE_FLAGS), "materialize")
        if args.flag("no_mount"):
            raise UsageError("materialize always mounts the workspace")
        if "mountpoint" not in args.opts:
            raise UsageError("materialize requires -m PATH")
        return self._create(args, mount=True)

    def _create(self, args: Args, *, mount: bool) -> int:
        name = args.pos[0]
        _check(name, "workspace")
        layers = args.opts.get("layers", [])
        if not layers:
            raise UsageError("at least one -l layer required")
        for layer in layers:
            _check_layer(layer)
        ws = self.store().workspaces.create(
            name,
            layers,
            mountpoint=args.opts.get("mountpoint"),
            mount=mount,
            suid_dev=args.flag("suid_dev"),
        )
        self.emit(f"{ws.mountpoint}\n")
        return 0

    def ws_list(self, argv: list[str]) -> int:
        args = parse(argv, (0, 0, JSON), "ws list")
        from tophan.layer.workspace import BrokenWorkspace, Workspace

        wss = self.store().workspaces
        good, broken = wss.scan()
        rows: list[Workspace | BrokenWorkspace] = sorted([*good, *broken], key=lambda w: w.name)
        if args.flag("json"):
            self.emit_json([ws.as_dict(wss.is_mounted(ws)) for ws in rows])
            return 0
        for ws in rows:
            # Unreadable metadata: flagged in the state column, so it is seen, not hidden.
            if isinstance(ws, BrokenWorkspace):
                self.emit(f"{ws.name}\tcorrupt\t-\t-\n")
            else:
                state = "mounted" if wss.is_mounted(ws) else "unmounted"
                self.emit(f"{ws.name}\t{state}\t{ws.mountpoint}\t{','.join(ws.lowers)}\n")
        return 0

    def _ws(self, argv: list[str], what: str, spec: Spec = (1, 1, {})) -> tuple[Args, str]:
        args = parse(argv, spec, what)
        return args, _check(args.pos[0], "workspace")

    def ws_info(self, argv: list[str]) -> int:
        args, name = self._ws(argv, "ws info", (1, 1, JSON))
        wss = self.store().workspaces
        ws = wss.get(name)
        mounted = wss.is_mounted(ws)
        if args.flag("json"):
            self.emit_json(ws.as_dict(mounted))
        else:
            self.emit_kv(ws.info_lines(mounted))
        return 0

    def ws_path(self, argv: list[str]) -> int:
        _, name = self._ws(argv, "ws path")
        self.emit(f"{self.store().workspaces.get(name).mountpoint}\n")
        return 0

    def ws_upper(self, argv: list[str]) -> int:
        _, name = self._ws(argv, "ws upper")
        self.emit(f"{self.store().workspaces.get(name).upper}\n")
        return 0

    def ws_mount(self, argv: list[str]) -> int:
        _, name = self._ws(argv, "ws mount")
        self.store().workspaces.mount(name)
        return 0

    def ws_unmount(self, argv: list[str]) -> int:
        _, name = self._ws(argv, "ws unmount")
        self.store().workspaces.unmount(name)
        return 0

    def ws_rm(self, argv: list[str]) -> int:
        force: Spec = (1, 1, {"--force": ("force", False, False), "-f": ("force", False, False)})
        args, name = self._ws(argv, "ws rm", force)
        self.store().workspaces.remove(name, force=args.flag("force"))
        return 0


# A command's entry: its handler, a table of its subcommands, or (module, attribute) of either.
LAYER_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {
    "create": Cli.layer_create,
    "list": Cli.layer_list,
    "ls": Cli.layer_list,
    "rm": Cli.layer_rm,
    "path": Cli.layer_path,
    "info": Cli.layer_info,
    "commit": Cli.layer_commit,
    "import": Cli.layer_import,
    "export": Cli.layer_export,
    "verify": Cli.layer_verify,
    "seal": Cli.layer_seal,
}
WS_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {
    "create": Cli.ws_create,
    "list": Cli.ws_list,
    "ls": Cli.ws_list,
    "info": Cli.ws_info,
    "path": Cli.ws_path,
    "upper": Cli.ws_upper,
    "mount": Cli.ws_mount,
    "unmount": Cli.ws_unmount,
    "umount": Cli.ws_unmount,
    "rm": Cli.ws_rm,
}
COMMANDS: dict[str, Any] = {
    "init": Cli.cmd_init,
    "layer": LAYER_COMMANDS,
    "ws": WS_COMMANDS,
    "materialize": Cli.cmd_materialize,
    "gc": Cli.cmd_gc,
    "fsck": Cli.cmd_fsck,
    "version": Cli.cmd_version,
    "help": Cli.cmd_help,
}


def command_table(overlayd: bool) -> dict[str, Any]:
    """Every top-level command of an entry point -> its entry (see ``resolve``)."""
    return COMMANDS if overlayd else {**COMMANDS, **EXTENSIONS}


def resolve(entry: Any) -> Any:
    """A handler or a subcommand table; a ``(module, attribute)`` entry is imported now."""
    if isinstance(entry, tuple):
        module, attr = entry
        # __import__, not importlib.import_module: importlib (and warnings with it) would cost
        # every command ~1 ms more to load, for the same call.
        return getattr(__import__(module, fromlist=[attr]), attr)
    return entry


def dispatch(cli: Cli, command: str, argv: list[str], entry: Any) -> int:
    """The one dispatcher: ``command [SUB] args``, where ``entry`` is the command's handler or
    its table of subcommands. ``-h``/``--help`` (first, or among the options, which ``parse``
    reports) print the command's own help; ``help`` as a subcommand prints the group's."""
    if isinstance(entry, dict):
        if not argv:
            raise UsageError(f"{command}: missing subcommand", cli.hint(command))
        if argv[0] in (*HELP_FLAGS, "help"):
            return cli.help(command)
        handler = entry.get(argv[0])
        if handler is None:
            raise UsageError(f"unknown {command} subcommand: {argv[0]}", cli.hint(command))
        command, argv, entry = f"{command} {argv[0]}", argv[1:], handler
    if argv[:1] and argv[0] in HELP_FLAGS:
        return cli.help(command)
    rc: int = entry(cli, argv)
    return rc


def run_command(cli: Cli, argv: list[str]) -> int:
    from tophan.cli import run

    return run.main(cli, "run", argv)


def _check(name: str, kind: str) -> str:
    from tophan._internal import names

    return names.check(name, kind)


def _iso(t: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def _check_layer(ref: str) -> str:
    """A layer name or digest (``sha256:…``, or a unique prefix of at least 12 hex digits)."""
    from tophan.layer.layers import check_ref

    return check_ref(ref)


def _write_atomically(dest: str, write: Callable[[IO[bytes]], str]) -> str:
    """Write an export to ``dest`` through a private temporary: a failed export leaves nothing,
    and nothing planted at a temporary name in a shared directory is ever opened."""
    from tophan._internal.fs import AtomicFile

    try:
        with AtomicFile(dest, None, durable=True) as out:
            return write(out)
    except OSError as e:
        raise TophanError(f"cannot write {dest}: {e.strerror}") from e


def _main(cli: Cli, argv: list[str] | None) -> int:
    prog = cli.prog
    buf = _Buffered()
    cli.out = buf
    try:
        rc = cli.run(sys.argv[1:] if argv is None else argv)
    except TophanError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        return e.rc
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        # Anything the library did not translate: still one line, never a traceback.
        where = f" ({e.filename})" if e.filename else ""
        sys.stderr.write(f"{prog}: {e.strerror or e}{where}\n")
        return 1
    buf.flush_to(sys.stdout)
    return rc


class _Buffered:
    """Holds stdout until the command succeeded: on failure stdout stays empty."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def flush_to(self, out: IO[str]) -> None:
        try:
            out.write("".join(self.parts))
            out.flush()
        except BrokenPipeError:
            pass


def main(argv: list[str] | None = None) -> int:
    return _main(Cli("tophan"), argv)


def overlayd_main(argv: list[str] | None = None) -> int:
    return _main(Cli("overlayd"), argv)


def launch() -> NoReturn:
    """``bin/tophan``: ``main``, then exit with its code.

    After a command that set ``Cli.exit_now`` the process ends without the interpreter's
    teardown (every module's objects freed, a last full garbage collection): ~4.5 ms of a
    ~45 ms `tophan run` on the 2-core test VM, and nothing is left for it to do."""
    cli = Cli("tophan")
    rc = _main(cli, None)
    if cli.exit_now:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)
    sys.exit(rc)
