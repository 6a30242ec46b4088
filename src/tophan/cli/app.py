"""``tophan app ...`` and ``tophan volume ...``: thin wrappers over apps.py and volumes.py."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from tophan.cli.main import APP_HEALTH_FLAGS, Cli, parse
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan.app.apps import App, Apps, AppSpec
    from tophan.cli.main import Args, Cli

APP_FLAGS = {
    "--file": ("file", True, False),
    "-f": ("file", True, False),
    "--restart": ("restart", True, False),
    "--stop-signal": ("stop_signal", True, False),
    "--stop-timeout": ("stop_timeout", True, False),
    **APP_HEALTH_FLAGS,
    "--log-opt": ("log_opt", True, True),
}
_APP_ONLY = {v[0] for v in APP_FLAGS.values()}


def _apps(cli: Cli) -> Apps:
    from tophan.app.apps import Apps

    return Apps(cli.store())


# -- create ------------------------------------------------------------------------------------


def _create(cli: Cli, argv: list[str]) -> int:
    from tophan.app import apps
    from tophan.cli import run as cli_run

    if not argv or argv[0].startswith("-"):
        raise UsageError("app create: NAME comes first", "tophan app create NAME [options] ...")
    name, rest = argv[0], argv[1:]
    p = cli_run.parse_run_args(rest, {**cli_run.FLAGS, **APP_FLAGS}, "app create")
    o = p.opts
    spec = apps.load_spec_file(o["file"]) if "file" in o else apps.new_spec()
    # The stack given here replaces the file's; other flags override its keys, and repeatable
    # ones add to its lists.
    if o.get("layer") or p.image is not None:
        spec.run.image, spec.run.layers = p.image, []
    if p.command:
        spec.run.command = p.command
    spec.run.update({k: v for k, v in o.items() if k not in _APP_ONLY | _NOT_RUN})
    _app_flags(spec, o)
    app = _apps(cli).create(name, spec)
    cli.emit(f"{app.name}\n")
    return 0


_NOT_RUN = {"rm", "interactive", "tty", "detach"}


def _app_flags(spec: AppSpec, o: dict[str, Any]) -> None:
    from tophan._internal.units import parse_size
    from tophan.app import apps, health

    if "restart" in o:
        spec.restart = apps.RestartPolicy.parse(o["restart"], "--restart")
    if "stop_signal" in o:
        spec.stop_signal = apps.signal_name(o["stop_signal"], "--stop-signal")
    if "stop_timeout" in o:
        spec.stop_timeout = health.parse_duration(o["stop_timeout"], "--stop-timeout")
    if o.get("no_healthcheck"):
        spec.health = None
        spec.no_healthcheck = True
    raw: dict[str, Any] = {k[7:]: v for k, v in o.items() if k.startswith("health_")}
    if raw:
        if not {"cmd", "http", "tcp"} & raw.keys():
            # Timings alone change the file's check.
            base = spec.health
            if base is None:
                raise UsageError("--health-* timings need a check", "add --health-cmd/http/tcp")
            given = {"cmd": base.cmd, "http": base.url, "tcp": base.address}[base.kind]
            raw = {base.kind: given, "interval": base.interval, "timeout": base.timeout,
                   "retries": base.retries, "start_period": base.start_period, **raw}  # fmt: skip
        elif spec.health is not None:
            old = spec.health
            raw = {"interval": old.interval, "timeout": old.timeout, "retries": old.retries,
                   "start_period": old.start_period, **raw}  # fmt: skip
        spec.health = apps.health_spec(raw, "--health")
    for item in o.get("log_opt", []):
        key, _, value = item.partition("=")
        if key == "max-size":
            spec.log.max_size = parse_size(value)
        elif key == "max-file" and value.isdigit() and int(value) >= 1:
            spec.log.max_files = int(value)
        else:
            raise UsageError(f"invalid --log-opt {item!r}", "use max-size=SIZE or max-file=N")


# -- lifecycle ---------------------------------------------------------------------------------


def _each(
    cli: Cli,
    argv: list[str],
    what: str,
    flags: dict[str, tuple[str, bool, bool]],
    act: Callable[[Apps, str, Args], object],
) -> int:
    """``app WHAT [flags] NAME...``: ``act`` on each app in turn, printing its name."""
    args = parse(argv, (1, -1, flags), f"app {what}")
    apps = _apps(cli)
    for name in args.pos:
        act(apps, name, args)
        cli.emit(f"{name}\n")
    return 0


def _timeout(args: Args) -> float | None:
    value = args.opts.get("timeout")
    if value is None:
        return None
    from tophan.app.health import parse_duration

    return parse_duration(value, "--time")


_STOP_FLAGS = {
    "-t": ("timeout", True, False),
    "--time": ("timeout", True, False),
    "--timeout": ("timeout", True, False),
}
_RM_FLAGS = {"-f": ("force", False, False), "--force": ("force", False, False)}


def _start(cli: Cli, argv: list[str]) -> int:
    from tophan.cli import run as cli_run

    def start(apps: Apps, name: str, args: Args) -> object:
        spec = apps.get(name).spec
        if spec.run.image:
            cli_run.trusted(cli, cli.store(), spec.run.image, args.flag("verify_again"))
        flag = args.opts.get("scan_policy")
        cli_run.scan_policy(apps.store, spec.run.image, spec.run.layers, flag, spec.scan_allow)
        return apps.start(name)

    return _each(cli, argv, "start", {**cli_run.VERIFY_AGAIN, **cli_run.SCAN_POLICY}, start)


def _stop(cli: Cli, argv: list[str]) -> int:
    return _each(cli, argv, "stop", _STOP_FLAGS, lambda a, n, o: a.stop(n, timeout=_timeout(o)))


def _restart(cli: Cli, argv: list[str]) -> int:
    return _each(
        cli, argv, "restart", _STOP_FLAGS, lambda a, n, o: a.restart(n, timeout=_timeout(o))
    )


def _rm(cli: Cli, argv: list[str]) -> int:
    return _each(cli, argv, "rm", _RM_FLAGS, lambda a, n, o: a.remove(n, force=o.flag("force")))


# -- looking -----------------------------------------------------------------------------------


def _ps(cli: Cli, argv: list[str]) -> int:
    from tophan.cli.main import JSON

    args = parse(
        argv,
        (0, 0, {**JSON, "-a": ("all", False, False), "--all": ("all", False, False)}),
        "app ps",
    )
    rows = []
    for app in _apps(cli).all():
        state = app.state()
        if not args.flag("all") and not state["alive"]:
            continue
        rows.append(_row(app, state))
    if args.flag("json"):
        cli.emit_json(rows)
        return 0
    header: tuple[str, ...] = ("NAME", "STATUS", "HEALTH", "PID", "RESTARTS", "UPTIME", "NETWORK")
    header += ("PORTS",)
    header += ("VULNS", "STACK")
    table = [header] + [
        (
            r["name"],
            r["status"],
            r["health"] or "-",
            str(r["pid"] or "-"),
            str(r["restarts"]),
            _ago(r["started_at"]) if r["status"] == "running" else "-",
            r["network"],
            ",".join(r["ports"]) or "-",
            r["vulns"],
            r["stack"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cli.emit(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1] + "\n"
        )
    return 0


def _row(app: App, state: dict[str, Any]) -> dict[str, Any]:
    status = state.get("status", "created")
    if status == "exited" and state.get("exit_code") is not None:
        status = f"exited ({state['exit_code']})"
    health = (state.get("health") or {}).get("status") if status == "running" else None
    stack = app.spec.run.image or ",".join(app.spec.run.layers)
    return {
        "name": app.name,
        "status": status,
        "health": health,
        "pid": state.get("pid") or 0,
        "supervisor": state.get("supervisor") if state["alive"] else None,
        "restarts": state.get("restart_count", 0),
        "started_at": state.get("started_at"),
        "exit_code": state.get("exit_code"),
        "oom_killed": state.get("oom_killed", False),
        "stack": stack,
        "network": app.spec.run.network,
        "ports": _ports(app, state, status),
        "vulns": _vulns(app),
        "error": state.get("error"),
    }


def _vulns(app: App) -> str:
    """The last scan's counts (``tophan scan``, ``scan --all``) of the app's image, else ``-``."""
    from tophan.scan import report

    if not app.spec.run.image:
        return "-"
    return report.vulns_column(report.last_of_image(app.store, app.spec.run.image))


def _ports(app: App, state: dict[str, Any], status: str) -> list[str]:
    """As published while it runs (``0.0.0.0:32768->80/tcp``: the host port a ``-p 80`` got);
    otherwise as asked for (``-p`` / ``ports``; ``-P``: every port the image exposes)."""
    if status == "running" and state.get("ports"):
        return list(state["ports"])
    return list(app.spec.run.publish) + (["-P"] if app.spec.run.publish_all else [])


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = int(time.time() - t)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _inspect(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, -1, {}), "app inspect")
    cli.emit_json([_apps(cli).get(n).as_dict() for n in args.pos])
    return 0


def _logs(cli: Cli, argv: list[str]) -> int:
    args = parse(
        argv,
        (
            1,
            1,
            {
                "-f": ("follow", False, False),
                "--follow": ("follow", False, False),
                "--tail": ("tail", True, False),
                "-n": ("tail", True, False),
            },
        ),
        "app logs",
    )
    app = _apps(cli).get(args.pos[0])
    tail = args.opts.get("tail")
    if tail is not None and not (tail.isdigit() or tail == "all"):
        raise UsageError(f"app logs: invalid --tail {tail!r}", "give a number of lines")
    out = sys.stdout.buffer
    # Logs are bytes, streamed (with -f, for as long as the app runs): past the CLI's buffer.
    _print_logs(app, None if tail in (None, "all") else int(tail), out)
    if args.flag("follow"):
        _follow(app, out)
    return 0


def _print_logs(app: App, tail: int | None, out: Any) -> None:
    files = [f"{app.log_path}.{i}" for i in range(9, 0, -1)] + [app.log_path]
    data = b""
    for path in files:
        try:
            with open(path, "rb") as f:
                data += f.read()
        except FileNotFoundError:
            continue
    if tail is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail:]) if tail else b""
    out.write(data)
    out.flush()


def _follow(app: App, out: Any) -> None:
    path = app.log_path
    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    f.seek(0, os.SEEK_END)
    try:
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not app.supervisor_alive():
                out.write(f.read())
                out.flush()
                return
            try:
                if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                    f.close()
                    f = open(path, "rb")  # noqa: SIM115 - rotated: the new file from its start
                    continue
            except FileNotFoundError:
                pass
            time.sleep(0.1)
    finally:
        f.close()


def _exec(cli: Cli, argv: list[str]) -> int:
    from tophan.cli import run as cli_run
    from tophan.run import cgroup
    from tophan.run import container as runtime
    from tophan.run.options import set_env

    flags = {
        k: v
        for k, v in cli_run.FLAGS.items()
        if v[0] in ("env", "user", "workdir", "interactive", "tty")
    }
    p = cli_run.parse_run_args(argv, flags, "app exec", positional="NAME")
    if p.image is None or not p.command:
        raise UsageError("app exec: NAME and CMD needed", "tophan app exec NAME -- CMD [ARG...]")
    app = _apps(cli).get(p.image)
    state = app.state()
    if not state["alive"] or state.get("status") != "running" or not state.get("pid"):
        raise UsageError(f"app {app.name} is not running", "start it with `tophan app start`")
    spec = app.run_spec()
    given: dict[str, str | None] = {}
    for item in p.opts.get("env", []):
        set_env(given, item, os.environ)
    env = {k: v for k, v in {**spec.env, **given}.items() if v is not None}
    tty = bool(p.opts.get("tty"))
    if tty:
        env.setdefault("TERM", "xterm")  # docker's rule, as for `run -t`
    spec = spec.replace(
        argv=p.command,
        env=env,
        user=p.opts.get("user", spec.user),
        workdir=p.opts.get("workdir", spec.workdir),
        tty=tty,
        interactive=bool(p.opts.get("interactive")),
    )
    cg = cgroup.Cgroup.open(state["cgroup"]) if state.get("cgroup") else None
    sys.stdout.flush()
    return runtime.exec_in(int(state["pid"]), spec, cgroup=cg)


# -- volumes -----------------------------------------------------------------------------------


def _volume_create(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, 1, {}), "volume create")
    cli.emit(f"{cli.store().volumes.create(args.pos[0]).name}\n")
    return 0


def _volume_ls(cli: Cli, argv: list[str]) -> int:
    from tophan.cli.main import JSON

    args = parse(argv, (0, 0, JSON), "volume ls")
    items = [v.as_dict() for v in cli.store().volumes.all()]
    if args.flag("json"):
        cli.emit_json(items)
    else:
        cli.emit("".join(f"{v['name']}\t{v['mountpoint']}\n" for v in items))
    return 0


def _volume_rm(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, -1, {}), "volume rm")
    vols = cli.store().volumes
    for name in args.pos:
        vols.remove(name)
        cli.emit(f"{name}\n")
    return 0


def _volume_inspect(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, -1, {}), "volume inspect")
    vols = cli.store().volumes
    cli.emit_json([vols.get(n).as_dict() for n in args.pos])
    return 0


# The subcommand tables cli.main.dispatch walks; each command's help is in cli/help.py.
APP_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {
    "create": _create,
    "start": _start,
    "stop": _stop,
    "restart": _restart,
    "rm": _rm,
    "ps": _ps,
    "ls": _ps,
    "list": _ps,
    "logs": _logs,
    "exec": _exec,
    "inspect": _inspect,
}
VOLUME_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {
    "create": _volume_create,
    "ls": _volume_ls,
    "list": _volume_ls,
    "rm": _volume_rm,
    "inspect": _volume_inspect,
}
