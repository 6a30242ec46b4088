"""Signatures kept in the store (issue 12): `image sign`, carried by push and pull, verified
offline with `verify NAME`; a real docker-registry on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import run_cli
from registry_fixture import make_layer, registry, store_at

if TYPE_CHECKING:
    from registry_fixture import Registry

__all__ = ["registry"]

DATA = Path(__file__).parent / "data" / "trust"
KEY, PUB = str(DATA / "cosign-empty.key"), str(DATA / "cosign-empty.pub")
NOPASS = {"TOPHAN_PASSPHRASE": ""}


def _store(tmp: Path, name: str = "app") -> Path:
    root = tmp / "store"
    store = store_at(root)
    make_layer(store, "l", {"srv/app.txt": b"app\n"}, tmp)
    store.images.create(name, ["l"])
    return root


def _sign(root: Path, *args: str) -> object:
    import os

    return run_cli("image", "sign", *args, "--key", KEY, root=root, env={**os.environ, **NOPASS})


def test_sign_in_store_push_pull_verify(tmp_path: Path, registry: Registry) -> None:
    src = _store(tmp_path)
    ident = registry.ref("team/app")
    r = _sign(src, "app", "--identity", ident, "--json")
    assert r.rc == 0, r.err  # type: ignore[attr-defined]
    signed = json.loads(r.out)  # type: ignore[attr-defined]
    assert signed["identity"] == ident
    # Offline, in the store: for the identity signed, not for the name's default.
    r = run_cli("verify", "app", "--key", PUB, "--identity", ident, root=src)
    assert r.rc == 0 and "verified (1 of 1" in r.out, r.err
    r = run_cli("verify", "app", "--key", PUB, root=src)
    assert r.rc == 1 and "does not match" in r.err
    # A second signature, and the same one again (stored once).
    assert _sign(src, "app", "--identity", ident).rc == 0  # type: ignore[attr-defined]
    r = run_cli("verify", "app", "--key", PUB, "--identity", ident, "--json", root=src)
    assert len(json.loads(r.out)["signatures"]) == 2

    # push carries them; the registry verifies them.
    assert run_cli("push", "app", registry.ref("team/app:1"), root=src).rc == 0
    r = run_cli(
        "verify", registry.ref("team/app:1"), "--key", PUB, "--json", root=tmp_path / "none"
    )
    assert r.rc == 0, r.err
    assert [s["ok"] for s in json.loads(r.out)["signatures"]] == [True, True]

    # pull stores them: verified offline in a fresh store, for where it came from.
    dst = tmp_path / "dst"
    store_at(dst)
    assert run_cli("pull", "-q", registry.ref("team/app:1"), "copy", root=dst).rc == 0
    r = run_cli("verify", "copy", "--key", PUB, "--json", root=dst)
    assert r.rc == 0, r.err
    assert json.loads(r.out)["digest"] == signed["digest"]
    # A pulled name with a registry host: the registry is asked unless --offline.
    assert run_cli("pull", "-q", registry.ref("team/app:1"), root=dst).rc == 0
    r = run_cli("verify", registry.ref("team/app:1"), "--offline", "--key", PUB, root=dst)
    assert r.rc == 0 and "verified (2 of 2" in r.out, r.err
    r = run_cli("verify", "missing", "--offline", "--key", PUB, root=dst)
    assert r.rc == 2 and "no image missing" in r.err
    assert run_cli("image", "rm", registry.ref("team/app:1"), root=dst).rc == 0
    # gc keeps them while the image lives, drops them with it.
    assert run_cli("gc", root=dst).rc == 0
    assert run_cli("verify", "copy", "--key", PUB, root=dst).rc == 0
    assert run_cli("image", "rm", "copy", root=dst).rc == 0
    assert not any((dst / "refs" / "attached").iterdir())


def test_wrong_key_and_no_signatures(tmp_path: Path) -> None:
    src = _store(tmp_path)
    r = run_cli("verify", "app", "--key", PUB, root=src)
    assert r.rc == 1 and "no signatures" in r.err and len(r.err.strip().splitlines()) == 1
    assert _sign(src, "app").rc == 0  # type: ignore[attr-defined]
    assert run_cli("key", "generate", str(tmp_path / "k"), "--no-passphrase").rc == 0
    r = run_cli("verify", "app", "--key", str(tmp_path / "k.pub"), root=src)
    assert r.rc == 1 and "does not verify" in r.err
    r = run_cli(
        "image", "sign", "nope", "--key", KEY, root=src, env={**__import__("os").environ, **NOPASS}
    )
    assert r.rc != 0 and "no such image" in r.err
