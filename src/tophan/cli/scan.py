"""``tophan scan`` and ``tophan db update|status``: parse, call tophan.scan, print."""

from __future__ import annotations

from tophan.cli.main import Cli, Spec, parse
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan.scan.match import Finding
    from tophan.scan.report import Scan

SPEC: Spec = (
    0,
    1,
    {
        "-l": ("layers", True, True),
        "--layer": ("layers", True, True),
        "--db": ("db", True, False),
        "--json": ("json", False, False),
        "--sarif": ("sarif", False, False),
        "--severity": ("severity", True, False),
        "--fail-on": ("fail_on", True, False),
        "--ignore-file": ("ignore_file", True, False),
        "--all": ("all", False, False),
    },
)


def scan(cli: Cli, argv: list[str]) -> int:
    from tophan.scan import report, targets
    from tophan.scan.inventory import Inventories
    from tophan.scan.match import check_severity

    args = parse(argv, SPEC, "scan")
    layers: list[str] = args.opts.get("layers", [])
    chosen = sum(map(bool, (args.pos, layers, args.flag("all"))))
    if chosen != 1:
        raise UsageError("scan: give one of IMAGE, -l LAYER…, --all", cli.hint("scan"))
    if args.flag("json") and args.flag("sarif"):
        raise UsageError("scan: --json or --sarif, not both", cli.hint("scan"))
    levels = report.severities(args.opts["severity"]) if "severity" in args.opts else None
    fail_on = check_severity(args.opts["fail_on"]) if "fail_on" in args.opts else None
    ignore = report.load_ignore(args.opts["ignore_file"]) if "ignore_file" in args.opts else set()
    store = cli.store()
    db = report.open_db(store, args.opts.get("db"))
    for w in db.warnings:
        cli.log(f"database: skipped {w}")
    inventories = Inventories(store)
    if args.flag("all"):
        wanted = targets.all_images(store)
    elif layers:
        wanted = [targets.layers(store, layers)]
    else:
        wanted = [targets.image(store, args.pos[0])]
    results = [report.scan(inventories, t, db) for t in wanted]
    for r in results:
        if r.target.digest:  # stored per image; bare layers have no image to show it on
            report.save(store, r, db)
        for w in r.warnings:
            cli.log(f"{r.target.name}: skipped {w}")
    shown = [report.select(r.findings, levels, ignore) for r in results]
    _print(cli, args.opts, results, shown)
    if fail_on is not None and any(report.at_or_above(s, fail_on) for s in shown):
        return 1
    return 0


def _print(
    cli: Cli, opts: dict[str, object], results: list[Scan], shown: list[list[Finding]]
) -> None:
    from tophan.scan import report

    if opts.get("json"):
        if len(results) == 1:
            cli.emit_json(report.as_json(shown[0]))
        else:
            cli.emit_json(
                {
                    "images": {
                        r.target.name: report.as_json(s)
                        for r, s in zip(results, shown, strict=True)
                    }
                }
            )
        return
    if opts.get("sarif"):
        flat = [f for s in shown for f in s]
        name = results[0].target.name if len(results) == 1 else "all images"
        cli.emit_json(report.sarif(flat, name))
        return
    for r, s in zip(results, shown, strict=True):
        if len(results) > 1:
            c = report.counts(s)
            summary = " ".join(f"{k}:{v}" for k, v in c.items() if v)
            cli.emit(f"{r.target.name}\t{len(s)} vulnerabilities\t{summary}\n")
        elif s:
            cli.emit(report.table(s))
        else:
            cli.emit(f"no vulnerabilities found ({r.packages} packages, {r.ecosystem or '-'})\n")


DB_UPDATE: Spec = (
    0,
    0,
    {"--ecosystems": ("ecosystems", True, False), "--url": ("url", True, False)},
)


def db_update(cli: Cli, argv: list[str]) -> int:
    from tophan.scan import db

    args = parse(argv, DB_UPDATE, "db update")
    names = db.ecosystems(args.opts.get("ecosystems"))
    url = db.base_url(args.opts.get("url"))
    got = db.update(cli.store(), names, url, cli.log)
    for eco in names:
        cli.emit(f"{eco}\t{got['ecosystems'].get(eco, {}).get('records', 0)} records\n")
    return 0


def db_status(cli: Cli, argv: list[str]) -> int:
    from tophan.cli.main import JSON
    from tophan.scan import db

    args = parse(argv, (0, 0, JSON), "db status")
    got = db.status(cli.store())
    if args.flag("json"):
        cli.emit_json(got)
        return 0
    if not got["ecosystems"]:
        cli.emit("no database: run `tophan db update`\n")
        return 0
    cli.emit("ECOSYSTEM\tRECORDS\tUPDATED\tAGE\n")
    for eco, info in got["ecosystems"].items():
        age = info["age_seconds"]
        shown = "-" if age is None else f"{age // 3600}h" if age >= 3600 else f"{age // 60}m"
        cli.emit(f"{eco}\t{info['records']}\t{info['updated']}\t{shown}\n")
    return 0


DB_COMMANDS = {"update": db_update, "status": db_status}
