"""``tophan sbom IMAGE|-l LAYER… [--format cyclonedx|spdx] [-o FILE]`` (tophan.scan.sbom)."""

from __future__ import annotations

from tophan.cli.main import Cli, Spec, parse
from tophan.errors import TophanError, UsageError

SPEC: Spec = (
    0,
    1,
    {
        "-l": ("layers", True, True),
        "--layer": ("layers", True, True),
        "--format": ("format", True, False),
        "-o": ("output", True, False),
        "--output": ("output", True, False),
    },
)


def sbom(cli: Cli, argv: list[str]) -> int:
    from tophan.scan import sbom as sbom_mod
    from tophan.scan import targets

    args = parse(argv, SPEC, "sbom")
    fmt = sbom_mod.check_format(args.opts.get("format", sbom_mod.CYCLONEDX))
    layers: list[str] = args.opts.get("layers", [])
    if not args.pos and not layers:
        raise UsageError("sbom: give an image or -l LAYER…", cli.hint("sbom"))
    if args.pos and layers:
        raise UsageError("sbom: give an image or -l LAYER…, not both", cli.hint("sbom"))
    dest = args.opts.get("output")
    if dest == "":
        raise UsageError("sbom: -o needs a file name", "use -o FILE, or leave it out for stdout")
    created = sbom_mod.creation_time()  # a malformed $SOURCE_DATE_EPOCH fails before any work
    store = cli.store()
    target = targets.layers(store, layers) if layers else targets.image(store, args.pos[0])
    data, warnings = sbom_mod.generate(store, target, fmt, created=created)
    for w in warnings:
        cli.log(f"skipped {w}")
    if dest is None or dest == "-":
        cli.emit(data.decode())
    else:
        _write(dest, data)
        cli.log(f"wrote {dest}")
    return 0


def _write(dest: str, data: bytes) -> None:
    """All of it or nothing at ``dest`` (``atomic_write``'s temporary and rename)."""
    from tophan._internal.fs import atomic_write

    try:
        atomic_write(dest, data, durable=True)
    except OSError as e:
        raise TophanError(
            f"sbom: cannot write {dest}: {e.strerror}", "check that its directory exists"
        ) from e
