"""``tophan image …``, ``tophan push`` and ``tophan pull``: parse, call the library, print.

Dispatched from cli.main.EXTENSIONS: ``IMAGE_COMMANDS``, ``push`` and ``pull``; each command's
help is in cli/help.py.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable

from tophan.cli.main import HEALTH_FLAGS, JSON, Args, Cli, parse
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan.image.images import Image, ImageConfig
    from tophan.image.registry import Options

REGISTRY_FLAGS: dict[str, tuple[str, bool, bool]] = {
    "--tls-verify": ("tls_verify", True, False),
    "--creds": ("creds", True, False),
    "--authfile": ("authfile", True, False),
    "--cert-dir": ("cert_dir", True, False),
    "--retries": ("retries", True, False),
    "--jobs": ("jobs", True, False),
    "-j": ("jobs", True, False),
    "--quiet": ("quiet", False, False),
    "-q": ("quiet", False, False),
    **JSON,
}


def _registry_argv(argv: list[str]) -> list[str]:
    # A bare --tls-verify (podman's spelling of "true") takes no value.
    return ["--tls-verify=true" if a == "--tls-verify" else a for a in argv]


# -- local images -----------------------------------------------------------------------------

CREATE_FLAGS: dict[str, tuple[str, bool, bool]] = {
    "-l": ("layer", True, True),
    "--layer": ("layer", True, True),
    "--from": ("from", True, False),
    "--cmd": ("cmd", True, False),
    "--entrypoint": ("entrypoint", True, False),
    "--env": ("env", True, True),
    "-e": ("env", True, True),
    "--workdir": ("workdir", True, False),
    "--user": ("user", True, False),
    "--port": ("port", True, True),
    "--expose": ("port", True, True),
    "--volume": ("volume", True, True),
    "--label": ("label", True, True),
    "--annotation": ("annotation", True, True),
    "--stop-signal": ("stop_signal", True, False),
    **HEALTH_FLAGS,
    "--compress": ("compress", True, False),
    "--platform": ("platform", True, False),
    "--replace": ("replace", False, False),
    **JSON,
}


def _create(cli: Cli, argv: list[str]) -> int:
    from tophan.image.spec import Platform

    args = parse(argv, (1, 1, CREATE_FLAGS), "image create")
    store = cli.store()
    o = args.opts
    base_name = o.get("from")
    layers = list(reversed(o.get("layer", [])))  # -l is top-first, like `ws create`
    base = store.images.get(base_name, ensure_layers=False) if base_name else None
    from tophan.image.images import ImageConfig

    config = _config_from_flags(base.config if base else ImageConfig(), o)
    image = store.images.create(
        args.pos[0],
        layers,
        base=base_name,
        config=config,
        compression=_compression(o.get("compress")),
        platform=Platform.parse(o["platform"]) if "platform" in o else None,
        annotations=_pairs(o.get("annotation", []), "--annotation"),
        replace_existing=args.flag("replace"),
    )
    cli.log(f"image {image.name} is {image.digest}")
    if args.flag("json"):
        cli.emit_json(_summary(image))
    else:
        cli.emit(f"{image.name}\n")
    return 0


def _config_from_flags(config: ImageConfig, o: dict[str, Any]) -> ImageConfig:
    from dataclasses import replace

    from tophan.image.images import Healthcheck

    changes: dict[str, Any] = {}
    if "cmd" in o:
        changes["cmd"] = _command(o["cmd"], "--cmd")
    if "entrypoint" in o:
        changes["entrypoint"] = _command(o["entrypoint"], "--entrypoint")
    if "workdir" in o:
        changes["working_dir"] = o["workdir"]
    if "user" in o:
        changes["user"] = o["user"]
    if "stop_signal" in o:
        changes["stop_signal"] = o["stop_signal"]
    if o.get("port"):
        ports = list(config.exposed_ports)
        for p in o["port"]:
            p = p if "/" in p else f"{p}/tcp"
            if not p.split("/")[0].isdigit():
                raise UsageError(f"invalid --port {p!r}", "use PORT[/tcp|/udp], e.g. 8080/tcp")
            ports.append(p)
        changes["exposed_ports"] = sorted(set(ports))
    if o.get("volume"):
        changes["volumes"] = sorted({*config.volumes, *o["volume"]})
    if o.get("label"):
        changes["labels"] = {**config.labels, **_pairs(o["label"], "--label")}
    if args_health := {k: o[k] for k in o if k.startswith("health_")}:
        hc = config.healthcheck
        test = hc.test if hc else None
        if "health_cmd" in args_health:
            given = args_health["health_cmd"]
            if given.lstrip().startswith("["):
                test = ["CMD", *_command(given, "--health-cmd")]
            else:
                test = ["CMD-SHELL", given]
        if test is None:
            raise UsageError("--health-* needs --health-cmd (or a base image with a health check)")
        changes["healthcheck"] = Healthcheck(
            test,
            _duration(args_health, "health_interval", hc.interval if hc else 0),
            _duration(args_health, "health_timeout", hc.timeout if hc else 0),
            _duration(args_health, "health_start_period", hc.start_period if hc else 0),
            hc.start_interval if hc else 0,
            _int(args_health.get("health_retries"), hc.retries if hc else 0, "--health-retries"),
        )
    if o.get("no_healthcheck"):
        changes["healthcheck"] = Healthcheck(["NONE"])
    config = replace(config, **changes)
    if o.get("env"):
        for item in o["env"]:
            if "=" not in item or item.startswith("="):
                raise UsageError(f"invalid --env {item!r}", "use KEY=VALUE")
        config = config.with_env(o["env"])
    return config


def _command(text: str, flag: str) -> list[str]:
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise UsageError(f"{flag}: invalid JSON array: {e}") from e
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise UsageError(f"{flag}: expected a JSON array of strings")
        return value
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}", "quote it as for a shell, or give a JSON array") from e


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid {flag} {item!r}", "use KEY=VALUE")
        out[key] = value
    return out


def _duration(o: dict[str, Any], key: str, default: int) -> int:
    """Nanoseconds of ``--KEY`` (``o[key]``), else ``default``."""
    from tophan._internal.units import parse_duration_ns

    text = o.get(key)
    return default if text is None else parse_duration_ns(text, "--" + key.replace("_", "-"))


def _int(text: str | None, default: int, flag: str) -> int:
    if text is None:
        return default
    if not text.isdigit():
        raise UsageError(f"invalid {flag} {text!r}", "expected a whole number")
    return int(text)


def _compression(value: str | None) -> str | None:
    if value is None:
        return "gzip"
    if value in ("none", "no", ""):
        return None
    if value not in ("gzip", "zstd"):
        raise UsageError(f"unknown --compress {value!r}", "use gzip, zstd or none")
    return value


def _summary(image: Image) -> dict[str, Any]:
    return {
        "name": image.name,
        "digest": image.digest,
        "created": image.created,
        "size": image.size,
        "platform": str(image.platform),
        "layers": image.layers,
    }


def _list(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (0, 0, JSON), "image list")
    images = cli.store().images.all()
    if args.flag("json"):
        cli.emit_json([_summary(i) for i in images])
    else:
        cli.emit("".join(f"{i.name}\t{i.digest}\t{i.created}\t{i.size}\n" for i in images))
    return 0


def _inspect(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, 1, JSON), "image inspect")
    image = cli.store().images.get(args.pos[0], ensure_layers=False)
    info = image.as_dict()
    info["names"] = [n for n in cli.store().images.names() if _same_digest(cli, n, image.digest)]
    cli.emit_json(info)
    return 0


def _same_digest(cli: Cli, name: str, digest: str) -> bool:
    from tophan.errors import TophanError

    try:
        return cli.store().images.get(name, ensure_layers=False).digest == digest
    except TophanError:
        return False


def _rm(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (1, -1, {}), "image rm")
    images = cli.store().images
    for name in args.pos:
        images.get(name, ensure_layers=False)  # all names must exist before any goes
    for name in args.pos:
        removed = images.remove(name)
        cli.log(f"removed {name} ({len(removed)} blobs freed)")
    return 0


def _tag(cli: Cli, argv: list[str]) -> int:
    args = parse(argv, (2, 2, {}), "image tag")
    image = cli.store().images.tag(args.pos[0], args.pos[1])
    cli.emit(f"{image.name}\n")
    return 0


def _import(cli: Cli, argv: list[str]) -> int:
    from tophan.image import archive as oci
    from tophan.image.spec import Platform

    flags: dict[str, tuple[str, bool, bool]] = {
        "--format": ("format", True, False),
        "--ref": ("ref", True, False),
        "--platform": ("platform", True, False),
        "--compress": ("compress", True, False),
        "--quiet": ("quiet", False, False),
        "-q": ("quiet", False, False),
        **JSON,
    }
    args = parse(argv, (1, 2, flags), "image import")
    o = args.opts
    names = oci.import_images(
        cli.store(),
        args.pos[0],
        args.pos[1] if len(args.pos) > 1 else None,
        fmt=o.get("format"),
        ref=o.get("ref"),
        platform=Platform.parse(o["platform"]) if "platform" in o else None,
        compression=_compression(o.get("compress")),
    )
    if args.flag("json"):
        images = cli.store().images
        cli.emit_json([_summary(images.get(n, ensure_layers=False)) for n in names])
    else:
        cli.emit("".join(f"{n}\n" for n in names))
    return 0


def _export(cli: Cli, argv: list[str]) -> int:
    from tophan.image import archive as oci

    args = parse(argv, (2, -1, {"--format": ("format", True, False)}), "image export")
    *names, dest = args.pos
    kind = oci.export_images(cli.store(), names, dest, fmt=args.opts.get("format"))
    cli.log(f"wrote {len(names)} image(s) as {kind} to {dest}")
    return 0


# -- registries -------------------------------------------------------------------------------


def registry_options(o: dict[str, Any]) -> Options:
    from tophan.image.registry import Options
    from tophan.image.spec import Platform

    opts = Options()
    verify = str(o.get("tls_verify", "true")).lower()
    if verify not in ("true", "false", "1", "0"):
        raise UsageError(f"invalid --tls-verify={verify}", "use --tls-verify=false or =true")
    opts.tls_verify = verify in ("true", "1")
    if "creds" in o:
        user, sep, secret = o["creds"].partition(":")
        if not sep or not user:
            raise UsageError("invalid --creds", "use --creds USER:PASSWORD")
        opts.creds = (user, secret)
    if "authfile" in o:
        if not os.path.isfile(o["authfile"]):
            raise UsageError(f"no such auth file: {o['authfile']}")
        opts.authfile = o["authfile"]
    if "cert_dir" in o:
        if not os.path.isdir(o["cert_dir"]):
            raise UsageError(f"no such certificate directory: {o['cert_dir']}")
        opts.cert_dir = o["cert_dir"]
    opts.retries = _int(o.get("retries"), opts.retries, "--retries")
    opts.jobs = max(1, _int(o.get("jobs"), opts.jobs, "--jobs"))
    if "chunk_size" in o:
        from tophan._internal.units import parse_size

        opts.chunk_size = parse_size(o["chunk_size"], "--chunk-size")
        if opts.chunk_size <= 0:
            raise UsageError(f"invalid --chunk-size {o['chunk_size']!r}", "e.g. 8M, 65536")
    if o.get("no_mount"):
        opts.mount = False
    if "platform" in o:
        opts.platform = Platform.parse(o["platform"])
    return opts


def _progress(args: Args, verb: str) -> Any:
    from tophan.image.registry import NoProgress

    if args.flag("quiet") or args.flag("json") or not sys.stderr.isatty():
        return NoProgress()
    return Bars(verb)


def push(cli: Cli, argv: list[str]) -> int:
    from tophan.image import registry

    argv = _registry_argv(argv)
    flags = {
        **REGISTRY_FLAGS,
        "--chunk-size": ("chunk_size", True, False),
        "--no-mount": ("no_mount", False, False),
        "--sign-key": ("sign_key", True, False),
        "--passphrase-file": ("passphrase_file", True, False),
    }
    args = parse(argv, (1, 2, flags), "push")
    name = args.pos[0]
    dest = args.pos[1] if len(args.pos) > 1 else name
    store = cli.store()
    key = None
    if isinstance(args.opts.get("sign_key"), str):
        from tophan.cli.trust import private_key

        # Opened before anything moves: a wrong passphrase must not leave an unsigned push.
        key = private_key(str(args.opts["sign_key"]), args.opts)
        from tophan.image.spec import remote_reference
        from tophan.trust import remote

        remote.check_writes(remote_reference(dest))  # nor must registries.d saying "off"
    elif "passphrase_file" in args.opts:
        raise UsageError("--passphrase-file is for --sign-key", "give --sign-key KEY too")

    def go(bars: Any) -> Any:
        report = registry.push(
            store, name, dest, options=registry_options(args.opts), progress=bars
        )
        _push_signatures(cli, store, name, report, registry_options(args.opts))
        if key is not None:
            from tophan.trust import remote

            remote.sign(f"{report.reference}@{report.digest}", key, registry_options(args.opts))
        return report

    return _transfer(cli, args, "push", go, lambda report: str(report.digest))


def pull(cli: Cli, argv: list[str]) -> int:
    from tophan.image import registry

    argv = _registry_argv(argv)
    flags = {
        **REGISTRY_FLAGS,
        "--platform": ("platform", True, False),
        "--policy": ("policy", True, False),
    }
    args = parse(argv, (1, 2, flags), "pull")
    store = cli.store()
    name = args.pos[1] if len(args.pos) > 1 else None
    source, trust = _admitted(cli, args.pos[0], args.opts, store.root)
    if source != args.pos[0] and name is None:
        name = args.pos[0]  # pulled by the verified digest, named as the user asked
    return _transfer(
        cli,
        args,
        "pull",
        lambda bars: _pull_signatures(
            cli,
            store,
            registry.pull(
                store, source, name, options=registry_options(args.opts), progress=bars, trust=trust
            ),
            registry_options(args.opts),
        ),
        lambda report: str(report.name),
    )


def _push_signatures(cli: Cli, store: Any, name: str, report: Any, options: Any) -> None:
    """The signatures stored with ``name`` go with it (docs/trust.md)."""
    local = store.images.ref(name)["digest"]
    if not store.images.attached(local):
        return  # nothing attached: no trust module imported
    if local != report.digest:
        cli.log(f"warning: {name} was converted on push; its stored signatures do not apply")
        return
    from tophan.image.spec import remote_reference
    from tophan.trust import registries, remote, stored

    on, scope = registries.use_attachments(remote_reference(report.reference))
    if not on:
        # The image is up already: say why its signatures are not, rather than fail the push.
        cli.log(f"warning: {name}'s stored signatures not pushed: attachments are off for {scope}")
        return
    sigs = stored.signatures(store.images, local)
    if sigs:
        where = f"{report.reference}@{local}"
        tag = remote.push_signatures(where, local, sigs, options)
        cli.log(f"{report.reference}: {len(sigs)} stored signature(s) pushed as {tag}")


def _pull_signatures(cli: Cli, store: Any, report: Any, options: Any) -> Any:
    """Signatures the registry holds for what was pulled are stored with it. A registry whose
    signatures are unreadable fails nothing here: the policy, if any, already decided."""
    from tophan.errors import TophanError
    from tophan.trust import remote, stored

    try:
        sigs = remote.pull_signatures(f"{report.reference}", report.digest, options)
    except TophanError as e:
        cli.log(f"warning: {report.reference}: its signatures were not stored: {e}")
        return report
    if sigs:
        stored.add(store.images, report.digest, sigs)
    return report


def _admitted(cli: Cli, source: str, opts: dict[str, Any], store_root: str) -> tuple[str, str]:
    """(``source`` as the policy admits it: pinned to the digest whose signatures were checked,
    the verdict to record with the image). Raises ``Refused`` (nothing is stored) when the
    policy refuses it."""
    from tophan.trust import policy

    path = policy.find(opts.get("policy"), store_root)
    if path is None:
        return source, ""
    from tophan.image.spec import remote_reference
    from tophan.trust import record, remote

    digest, verdict = remote.admit(source, policy.load(path), registry_options(opts))
    cli.log(f"{source}: accepted by {verdict.summary}")
    ref = remote_reference(source)
    trust = record.make(verdict, str(ref), digest)
    if not digest:
        return source, trust
    return f"{ref.domain}/{ref.path}@{digest}", trust


def _transfer(
    cli: Cli,
    args: Args,
    what: str,
    go: Callable[[Any], Any],
    summary: Callable[[Any], str],
) -> int:
    """Run a push or pull with progress bars (on a TTY), then report it."""
    bars = _progress(args, what)
    try:
        report = go(bars)
    finally:
        if isinstance(bars, Bars):
            bars.close()
    cli.log(_describe(report))
    if args.flag("json"):
        cli.emit_json(_report(report))
    else:
        cli.emit(f"{summary(report)}\n")
    return 0


def _describe(report: Any) -> str:
    counts: dict[str, int] = {}
    for action in report.blobs.values():
        counts[action] = counts.get(action, 0) + 1
    what = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    sent, received = report.bytes_sent, report.bytes_received
    return f"{report.reference} {report.digest}: {what}; sent {sent} B, received {received} B"


def _report(report: Any) -> dict[str, Any]:
    return {
        "reference": report.reference,
        "name": report.name,
        "digest": report.digest,
        "blobs": report.blobs,
        "bytes_sent": report.bytes_sent,
        "bytes_received": report.bytes_received,
    }


def _tags(cli: Cli, argv: list[str]) -> int:
    from tophan.image import registry

    argv = _registry_argv(argv)
    args = parse(argv, (1, 1, REGISTRY_FLAGS), "image tags")
    tags = registry.list_tags(args.pos[0], registry_options(args.opts))
    if args.flag("json"):
        cli.emit_json(tags)
    else:
        cli.emit("".join(f"{t}\n" for t in tags))
    return 0


def _referrers(cli: Cli, argv: list[str]) -> int:
    from tophan.image import registry
    from tophan.image.blobs import is_digest

    argv = _registry_argv(argv)
    flags = {**REGISTRY_FLAGS, "--artifact-type": ("artifact_type", True, False)}
    args = parse(argv, (1, 1, flags), "image referrers")
    repo, ref = registry.repository_for(args.pos[0], registry_options(args.opts))
    try:
        digest = ref.digest if is_digest(ref.digest) else repo.head_manifest(ref.reference)
        if digest is None:
            raise UsageError(f"no such image: {ref}")
        found = repo.referrers(digest, args.opts.get("artifact_type"))
    finally:
        repo.client.close()
    if args.flag("json"):
        cli.emit_json(found)
    else:
        cli.emit(
            "".join(
                f"{m.get('digest')}\t{m.get('artifactType', '')}\t{m.get('mediaType')}\n"
                for m in found
            )
        )
    return 0


def _sign(cli: Cli, argv: list[str]) -> int:
    from tophan.cli.trust import image_sign

    return image_sign(cli, argv)


IMAGE_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {
    "sign": _sign,
    "create": _create,
    "list": _list,
    "ls": _list,
    "inspect": _inspect,
    "rm": _rm,
    "tag": _tag,
    "import": _import,
    "export": _export,
    "tags": _tags,
    "referrers": _referrers,
}


# -- progress bars ----------------------------------------------------------------------------


class Bars:
    """One line per blob on stderr, redrawn in place at most ten times a second."""

    WIDTH = 30

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.lock = threading.Lock()
        self.rows: dict[str, list[Any]] = {}  # key -> [label, done, total, status]
        self.drawn = 0
        self.last = 0.0

    def start(self, key: str, label: str, total: int) -> None:
        with self.lock:
            self.rows[key] = [label, 0, total, ""]
            self._draw(force=True)

    def update(self, key: str, done: int) -> None:
        with self.lock:
            if key in self.rows:
                self.rows[key][1] = done
            self._draw()

    def finish(self, key: str, status: str) -> None:
        with self.lock:
            if key in self.rows:
                row = self.rows[key]
                row[3] = status
                if status in ("uploaded", "downloaded", "local"):
                    row[1] = row[2]
            self._draw(force=True)

    def close(self) -> None:
        with self.lock:
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        out = []
        if self.drawn:
            out.append(f"\x1b[{self.drawn}F")
        for label, done, total, status in self.rows.values():
            frac = done / total if total else 1.0
            fill = int(frac * self.WIDTH)
            bar = "#" * fill + "." * (self.WIDTH - fill)
            state = status or self.verb + "ing"
            out.append(f"\x1b[2K{label}  [{bar}] {_mb(done):>8}/{_mb(total):<8} {state}\n")
        self.drawn = len(self.rows)
        sys.stderr.write("".join(out))
        sys.stderr.flush()


def _mb(n: int) -> str:
    if n < 1 << 20:
        return f"{n / 1024:.1f}K"
    return f"{n / (1 << 20):.1f}M"
