"""``tophan build`` and ``tophan build prune``: parse, call tophan.build, print."""

from __future__ import annotations

import os
import sys

from tophan.cli.main import Cli, parse
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FLAGS: dict[str, tuple[str, bool, bool]] = {
    "-t": ("tag", True, True),
    "--tag": ("tag", True, True),
    "-f": ("file", True, False),
    "--file": ("file", True, False),
    "--build-arg": ("build_arg", True, True),
    "--target": ("target", True, False),
    "--no-cache": ("no_cache", False, False),
    "--network": ("network", True, False),
    "--layer": ("layer", True, True),
    "--timestamp": ("timestamp", True, False),
    "--platform": ("platform", True, False),
    "-q": ("quiet", False, False),
    "--quiet": ("quiet", False, False),
    "--iidfile": ("iidfile", True, False),
    "--tls-verify": ("tls_verify", True, False),
    "--cert-dir": ("cert_dir", True, False),
    "--creds": ("creds", True, False),
    "--authfile": ("authfile", True, False),
    "--scan": ("scan", False, False),
    "--fail-on": ("fail_on", True, False),
}


def build(cli: Cli, argv: list[str]) -> int:
    if argv and argv[0] == "prune":
        return prune(cli, argv[1:])
    argv = ["--tls-verify=true" if a == "--tls-verify" else a for a in argv]
    args = parse(argv, (1, 1, FLAGS), "build")
    opts = _options(args.opts, args.pos[0])
    fail_on = _fail_on(args.opts)
    db = _scan_db(cli) if args.opts.get("scan") else None
    from tophan.build.builder import Output, build_from_tar
    from tophan.build.builder import build as run_build

    store = cli.store()
    quiet = bool(args.opts.get("quiet"))
    if opts.context == "-":
        result = build_from_tar(store, sys.stdin.buffer, opts, Output(quiet=quiet))
    else:
        result = run_build(store, opts, Output(quiet=quiet))
    rc = _report(cli, result.digest, result.steps, result.cached, quiet, args.opts)
    return rc if db is None else _scan(cli, result.image, db, fail_on)


def _fail_on(o: dict[str, Any]) -> str | None:
    """--fail-on, checked before the build (a typo should not cost one)."""
    if "fail_on" not in o:
        return None
    if not o.get("scan"):
        raise UsageError("build: --fail-on needs --scan", "see `tophan build --help`")
    from tophan.scan.match import check_severity

    return check_severity(o["fail_on"])


def _scan_db(cli: Cli) -> Any:
    """The store's vulnerability database, opened before the build: none fails fast."""
    from tophan.scan import report

    return report.open_db(cli.store())


def _scan(cli: Cli, image: Any, db: Any, fail_on: str | None) -> int:
    """The built image against the store's database: the table, stored, exit 1 at --fail-on."""
    from tophan.scan import report, targets
    from tophan.scan.inventory import Inventories

    store = cli.store()
    result = report.scan(Inventories(store), targets.of_image(store, image), db)
    report.save(store, result, db)
    cli.emit(report.table(result.findings) if result.findings else "no vulnerabilities found\n")
    if fail_on is not None and report.at_or_above(result.findings, fail_on):
        return 1
    return 0


def _report(cli: Cli, digest: str, steps: int, cached: int, quiet: bool, o: dict[str, Any]) -> int:
    if o.get("iidfile"):
        from tophan._internal.fs import atomic_write

        atomic_write(o["iidfile"], digest.encode())
    if quiet:
        cli.emit(f"{digest}\n")
    else:
        cli.emit(f"built {digest} ({steps} steps, {cached} from cache)\n")
    return 0


def _options(o: dict[str, Any], context: str) -> Any:
    from tophan.build.builder import BuildOptions
    from tophan.cli.image import registry_options

    build_args = {}
    for item in o.get("build_arg", []):
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid --build-arg {item!r}", "use --build-arg NAME=VALUE")
        # Docker's rule: --build-arg NAME (no "=") takes NAME's value from our environment.
        if eq:
            build_args[key] = value
        elif key in os.environ:
            build_args[key] = os.environ[key]
    layers = {}
    for item in o.get("layer", []):
        stage, eq, name = item.partition("=")
        if not eq or not stage or not name:
            raise UsageError(f"invalid --layer {item!r}", "use --layer STAGE=LAYERNAME")
        layers[stage] = name
    return BuildOptions(
        context,
        file=o.get("file"),
        tags=o.get("tag", []),
        build_args=build_args,
        target=o.get("target"),
        no_cache=bool(o.get("no_cache")),
        network=o.get("network", "host"),
        layers=layers,
        timestamp=_timestamp(o.get("timestamp")),
        platform=o.get("platform"),
        registry=registry_options(o),  # (the flags pull takes, for FROM pulled on demand)
    )


def _timestamp(value: str | None) -> int | None:
    if value is None:
        value = os.environ.get("SOURCE_DATE_EPOCH") or None
        if value is None:
            return None
    if not value.isdigit():
        raise UsageError(f"invalid timestamp {value!r}", "give seconds since the epoch, e.g. 0")
    return int(value)


def prune(cli: Cli, argv: list[str]) -> int:
    from tophan import maintenance
    from tophan.build.cache import Cache

    parse(argv, (0, 0, {}), "build prune")
    store = cli.store()
    removed = Cache(store).prune()
    report = maintenance.gc(store)  # the layers only the cache kept
    cli.emit(f"removed {removed} cache entries, {len(report.layers_removed)} layers\n")
    return 0
