"""Signatures kept in the store (issue 12): `image sign`, carried by push and pull, verified
offline with `verify NAME`; a real docker-registry on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import run_cli
from registry_fixture import make_layer, registry, store_at
from tophan.image.spec import REF_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from registry_fixture import Registry

__all__ = ["registry"]

DATA = Path(__file__).parent / "data" / "trust"
KEY, PUB = str(DATA / "cosign-zarf.key"), str(DATA / "cosign-zarf.pub")
NOPASS = {"TOPHAN_PASSPHRASE": "test"}  # the zarf fixture key's


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


def _rewrite(archive: Path, out: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Copy an oci-archive with ``change`` applied to its members (name -> bytes)."""
    with tarfile.open(archive) as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]
    change(members)
    with tarfile.open(out, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_signatures_through_oci_archive(tmp_path: Path) -> None:
    src = _store(tmp_path)
    assert _sign(src, "app").rc == 0  # type: ignore[attr-defined]
    archive = tmp_path / "app.tar"
    assert run_cli("image", "export", "app", f"oci-archive:{archive}", root=src).rc == 0
    with tarfile.open(archive) as t:
        index = json.loads(t.extractfile("index.json").read())  # type: ignore[union-attr]
    digest = run_cli("image", "inspect", "app", root=src).out
    sig_entries = [m for m in index["manifests"] if m["annotations"][REF_NAME].endswith(".sig")]
    [entry] = sig_entries
    assert entry["annotations"][REF_NAME] == "sha256-" + json.loads(digest)["digest"][7:] + ".sig"
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    fresh = tmp_path / "fresh"
    store_at(fresh)
    r = run_cli("image", "import", f"oci-archive:{archive}", root=fresh)
    assert r.rc == 0, r.err
    assert run_cli("image", "list", "--json", root=fresh).out.count('"name"') == 1  # no .sig image
    r = run_cli("verify", "app", "--key", PUB, root=fresh)
    assert r.rc == 0 and "verified (1 of 1" in r.out, r.err

    # Tampered: a payload changed in place (its digest no longer holds) -> the import refuses.
    def payload(members: dict[str, bytes]) -> None:
        sig = json.loads(members[f"blobs/sha256/{entry['digest'][7:]}"])
        rel = f"blobs/sha256/{sig['layers'][0]['digest'][7:]}"
        members[rel] = members[rel].replace(b"docker.io/library/app", b"docker.io/library/evil")

    bad = tmp_path / "bad.tar"
    _rewrite(archive, bad, payload)
    other = tmp_path / "other"
    store_at(other)
    r = run_cli("image", "import", f"oci-archive:{bad}", root=other)
    assert r.rc != 0 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert run_cli("image", "list", "--json", root=other).out.count('"name"') == 0

    # Tampered consistently (a forged signature, index.json fixed up): imported, never verified.
    def forged(members: dict[str, bytes]) -> None:
        rel = f"blobs/sha256/{entry['digest'][7:]}"
        sig = json.loads(members.pop(rel))
        ann = sig["layers"][0]["annotations"]
        ann["dev.cosignproject.cosign/signature"] = base64.b64encode(b"0" * 70).decode()
        data = json.dumps(sig).encode()
        new = hashlib.sha256(data).hexdigest()
        members[f"blobs/sha256/{new}"] = data
        idx = json.loads(members["index.json"])
        for m in idx["manifests"]:
            if m["digest"] == entry["digest"]:
                m["digest"], m["size"] = f"sha256:{new}", len(data)
        members["index.json"] = json.dumps(idx).encode()

    _rewrite(archive, bad, forged)
    third = tmp_path / "third"
    store_at(third)
    assert run_cli("image", "import", f"oci-archive:{bad}", root=third).rc == 0
    r = run_cli("verify", "app", "--key", PUB, root=third)
    assert r.rc == 1 and "does not verify" in r.err, r.err
