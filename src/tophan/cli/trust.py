"""``tophan key``, ``tophan sign`` and ``tophan verify``: parse, call tophan.trust, print.

Dispatched from cli.main.EXTENSIONS; each command's help is in cli/help.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from tophan.cli.image import REGISTRY_FLAGS, _registry_argv, registry_options
from tophan.cli.main import JSON, Cli, parse
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tophan.store import Store

PASSPHRASE_FLAGS: dict[str, tuple[str, bool, bool]] = {
    "--passphrase-file": ("passphrase_file", True, False),
}


def passphrase(
    opts: dict[str, object], *, confirm: bool = False, allow_empty: bool = False
) -> bytes:
    """From ``--passphrase-file``, else ``$TOPHAN_PASSPHRASE``, else asked on the terminal."""
    path = opts.get("passphrase_file")
    if isinstance(path, str):
        try:
            with open(path, "rb") as f:
                value = f.read(4096).rstrip(b"\r\n")
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}", "check --passphrase-file") from e
    elif "TOPHAN_PASSPHRASE" in os.environ:
        value = os.environ["TOPHAN_PASSPHRASE"].encode()
    elif sys.stdin.isatty():
        import getpass

        value = getpass.getpass("passphrase: ").encode()
        if confirm and getpass.getpass("again: ").encode() != value:
            raise UsageError("the passphrases differ", "type the same passphrase twice")
    else:
        raise UsageError(
            "no passphrase", "give --passphrase-file F or set $TOPHAN_PASSPHRASE (no terminal)"
        )
    if not value and not allow_empty:
        raise UsageError(
            "empty passphrase", "choose one, or say --no-passphrase to store the key unprotected"
        )
    return value


def private_key(path: str, opts: dict[str, object]) -> ec.EllipticCurvePrivateKey:
    from tophan.trust import keys

    return keys.read_private_key(path, passphrase(opts, allow_empty=True))


def _generate(cli: Cli, argv: list[str]) -> int:
    from tophan.trust import keys

    flags = {**PASSPHRASE_FLAGS, "--no-passphrase": ("no_passphrase", False, False)}
    args = parse(argv, (1, 1, flags), "key generate")
    if args.flag("no_passphrase"):
        if "passphrase_file" in args.opts:
            raise UsageError("--no-passphrase and --passphrase-file exclude each other")
        secret = b""
    else:
        secret = passphrase(args.opts, confirm=True)
    key_path, pub_path = keys.generate(args.pos[0], secret)
    cli.emit(f"{key_path}\n{pub_path}\n")
    return 0


KEY_COMMANDS: dict[str, Callable[[Cli, list[str]], int]] = {"generate": _generate}


def sign(cli: Cli, argv: list[str]) -> int:
    from tophan.trust import remote

    flags = {**REGISTRY_FLAGS, **PASSPHRASE_FLAGS, "--key": ("key", True, False)}
    args = parse(_registry_argv(argv), (1, 1, flags), "sign")
    key_path = args.opts.get("key")
    if not isinstance(key_path, str):
        raise UsageError("sign needs --key KEY", "the private key `tophan key generate` wrote")
    key = private_key(key_path, args.opts)
    digest, tag = remote.sign(args.pos[0], key, registry_options(args.opts))
    if args.flag("json"):
        cli.emit_json({"digest": digest, "signature_tag": tag})
    else:
        cli.emit(f"{digest} {tag}\n")
    return 0


def verify(cli: Cli, argv: list[str]) -> int:
    from tophan.trust import keys, remote
    from tophan.trust.signature import SignatureError

    flags = {
        **REGISTRY_FLAGS,
        **JSON,
        "--key": ("key", True, False),
        "--identity": ("identity", True, False),
        "--offline": ("offline", False, False),
    }
    args = parse(_registry_argv(argv), (1, 1, flags), "verify")
    key_path = args.opts.get("key")
    if not isinstance(key_path, str):
        raise UsageError("verify needs --key PUB", "the public key the image was signed with")
    key = keys.read_public_key(key_path)
    store = _store_if_any(cli)
    if _stored_image(store, args.pos[0], args.flag("offline")):
        assert store is not None
        digest, results = _verify_stored(cli, store, args.pos[0], key, args.opts.get("identity"))
    else:
        digest, results = remote.verify(args.pos[0], key, registry_options(args.opts))
    good = [r for r in results if r.ok]
    if args.flag("json"):
        cli.emit_json(
            {"digest": digest, "verified": bool(good), "signatures": [r.to_json() for r in results]}
        )
    else:
        for r in results:
            cli.log(f"signature {r.index}: {r.reason}")
    if good:
        if not args.flag("json"):
            cli.emit(f"{digest} verified ({len(good)} of {len(results)} signatures)\n")
        return 0
    if args.flag("json"):
        return 1
    why = "it has no signatures" if not results else "; ".join(r.reason for r in results)
    raise SignatureError(
        f"{args.pos[0]} ({digest}): no signature verifies with {key_path}: {why}",
        "sign it with the matching key (`tophan sign`), or check --key",
    )


def _stored_image(store: Store | None, name: str, offline: bool) -> bool:
    """Whether ``verify`` checks the store's copy: a name without a registry host that the
    store holds, or any stored name with ``--offline``; a registry reference is asked of the
    registry (a pulled copy of it may predate its signatures)."""
    from tophan.image.spec import parse_reference

    if store is None or not store.images.exists(name):
        if offline:
            raise UsageError(f"verify --offline: no image {name} in the store", "see `image list`")
        return False
    return offline or not parse_reference(name).domain


def _store_if_any(cli: Cli) -> Store | None:
    """The store, if there is one: `verify REF` of a registry image needs none."""
    from tophan.errors import TophanError

    try:
        return cli.store()
    except TophanError:
        return None


def _verify_stored(
    cli: Cli, store: Store, name: str, key: ec.EllipticCurvePublicKey, identity: object
) -> tuple[str, list[Any]]:
    """An image in the store: its stored signatures, offline, for ``--identity`` (default: the
    reference it was pulled as, else its name)."""
    from tophan.trust import record, remote, stored

    reference = (
        identity if isinstance(identity, str) else record.origin(name, store.images.ref(name))[0]
    )
    want = remote._repository_of(stored.identity_for(reference))
    cli.log(f"{name}: the signatures stored with it, for {want}")
    return stored.verify(
        store.images, name, key, lambda ident: remote._repository_of(ident) == want
    )


def image_sign(cli: Cli, argv: list[str]) -> int:
    from tophan.trust import stored

    flags = {
        **PASSPHRASE_FLAGS,
        **JSON,
        "--key": ("key", True, False),
        "--identity": ("identity", True, False),
    }
    args = parse(argv, (1, 1, flags), "image sign")
    key_path = args.opts.get("key")
    if not isinstance(key_path, str):
        raise UsageError("image sign needs --key KEY", "the private key `key generate` wrote")
    key = private_key(key_path, args.opts)
    identity = args.opts.get("identity")
    digest, ident = stored.sign(
        cli.store().images, args.pos[0], key, identity if isinstance(identity, str) else None
    )
    if args.flag("json"):
        cli.emit_json({"digest": digest, "identity": ident})
    else:
        cli.emit(f"{digest} {ident}\n")
    return 0


def check_start(cli: Cli, store: Store, name: str, policy_path: str, again: bool) -> None:
    """The policy's word on starting the image ``name``: from what its pull recorded, else from
    the signatures stored with it; with ``again``, from its signatures in the registry it came
    from (or, built or imported here, its stored ones). A new verdict is recorded."""
    from tophan.trust import policy, record

    ref = store.images.ref(name)
    digest = ref["digest"]
    reference, from_registry = record.origin(name, ref)
    if not again:
        try:
            record.check(policy.load(policy_path, load_keys=False), name, digest, ref)
            return
        except record.Unsigned as refused:
            if not store.images.attached(digest):
                raise
            # Signatures are stored with it: verifying them is needed now, offline.
            from tophan.trust import stored

            try:
                verdict = stored.admit(store.images, reference, digest, policy.load(policy_path))
            except policy.Refused as e:
                raise policy.Refused(
                    f"{refused.message}; nor do the signatures stored with it satisfy it"
                    f" ({e.message.rsplit(': ', 1)[-1]})",
                    refused.hint,
                ) from None
    elif from_registry:
        from tophan.image.registry import Options
        from tophan.trust import remote

        verdict = remote.admit(reference, policy.load(policy_path), Options(), digest=digest)[1]
    else:
        from tophan.trust import stored

        verdict = stored.admit(store.images, reference, digest, policy.load(policy_path))
    made = record.make(verdict, reference, digest, registry=from_registry)
    store.images.set_ref_field(name, digest, record.FIELD, made)
    cli.log(f"{name}: accepted by {verdict.summary}")
