"""``tophan network ...``: private networks (thin wrappers over tophan.net.networks)."""

from __future__ import annotations

from tophan.cli.main import Cli, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from tophan.net.networks import Networks


def _networks(cli: Cli) -> Networks:
    from tophan.net.networks import Networks

    return Networks(cli.store())


def _create(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, 1, {"--subnet": ("subnet", True, True)}), "network create")
    net = _networks(cli).create(args.pos[0], list(args.opts.get("subnet", [])))
    cli.emit(f"{net.name}\n")
    return 0


def _ls(cli: Cli, argv: list[str]) -> int:
    from tophan.cli.main import JSON

    args = parse(argv, (0, 0, JSON), "network ls")
    networks = _networks(cli)
    networks.get("tophan")  # the default network is listed once it exists: now
    items = [n.as_dict() for n in networks.all()]
    if args.flag("json"):
        cli.emit_json(items)
    else:
        cli.emit("".join(f"{n['name']}\t{n['bridge']}\t{','.join(n['subnets'])}\n" for n in items))
    return 0


def _rm(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, -1, {}), "network rm")
    networks = _networks(cli)
    for name in args.pos:
        networks.remove(name)
        cli.emit(f"{name}\n")
    return 0


def _inspect(cli: Cli, argv: list[str]) -> int:
    from tophan.net import ipam

    args = parse(argv, (1, -1, {}), "network inspect")
    networks = _networks(cli)
    out = []
    for name in args.pos:
        doc = networks.get(name).as_dict()
        store = cli.store()
        doc["containers"] = [
            {
                "name": lease.info.get("name", ""),
                "addresses": lease.addresses,
                "ports": lease.info.get("ports", "").split(",") if lease.info.get("ports") else [],
            }
            for lease in ipam.leases(store, name)
            if ipam.is_live(store, lease)
        ]
        out.append(doc)
    cli.emit_json(out)
    return 0


NETWORK_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {
    "create": _create,
    "ls": _ls,
    "list": _ls,
    "rm": _rm,
    "inspect": _inspect,
}
