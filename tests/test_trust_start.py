"""The policy at start (issue 12): what a pull verified is recorded with the image; `run` and
`app start` check the policy in force now against it, `--verify-again` against the registry.
A real docker-registry on 127.0.0.1, real containers."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import run_cli
from registry_fixture import busybox_layer, registry, store_at
from tophan.trust import keys, remote

if TYPE_CHECKING:
    from conftest import Result
    from registry_fixture import Registry

__all__ = ["registry"]

DATA = Path(__file__).parent / "data" / "trust"
PUB = str(DATA / "cosign-zarf.pub")
KEY = str(DATA / "cosign-zarf.key")
NOPASS = {"TOPHAN_PASSPHRASE": "test"}  # the zarf fixture key's


def _policy(tmp: Path, name: str, docker: dict, default: dict | None = None) -> Path:  # type: ignore[type-arg]
    p = tmp / f"{name}.json"
    top = default or {"type": "insecureAcceptAnything"}
    p.write_text(json.dumps({"default": [top], "transports": {"docker": docker}}))
    return p


def _signed(pub: str) -> dict[str, object]:
    return {"type": "sigstoreSigned", "keyPath": pub, "signedIdentity": {"type": "matchRepository"}}


def _tophan(root: Path, policy: Path, *args: str) -> Result:
    return run_cli(*args, root=root, env={**os.environ, "TOPHAN_POLICY": str(policy)})


def _record(root: Path, name: str) -> dict:  # type: ignore[type-arg]
    ref = root / "refs" / "images" / urllib.parse.quote(name, safe="")
    fields = dict(line.split("=", 1) for line in ref.read_text().splitlines())
    return json.loads(fields["trust"])  # type: ignore[no-any-return]


def _setup(tmp: Path, reg: Registry) -> tuple[Path, Path, Path]:
    """A registry with team/signed:1 (signed by the cosign-made key) and team/plain:1; a store
    that pulled plain under an open policy and signed under the strict one; the strict policy."""
    src = tmp / "src"
    store = store_at(src)
    busybox_layer(store, "base", tmp)
    store.images.create("app", ["base"])
    for repo in ("team/signed:1", "team/plain:1"):
        assert run_cli("push", "app", reg.ref(repo), root=src).rc == 0
    remote.sign(
        reg.ref("team/signed:1"), keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    )
    open_ = _policy(tmp, "open", {})
    strict = _policy(tmp, "strict", {f"{reg.host}/team": [_signed(PUB)]})
    dst = tmp / "dst"
    store_at(dst)
    r = _tophan(dst, open_, "pull", "-q", reg.ref("team/plain:1"), "plain")
    assert r.rc == 0, r.err
    r = _tophan(dst, strict, "pull", "-q", reg.ref("team/signed:1"), "signed")
    assert r.rc == 0, r.err
    return dst, open_, strict


def _refused(r: Result, *words: str) -> None:
    assert r.rc != 0, r.out
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "Traceback" not in r.err
    for w in words:
        assert w in r.err, r.err


def test_run_checks_the_recorded_verification(tmp_path: Path, registry: Registry) -> None:
    dst, open_, strict = _setup(tmp_path, registry)
    plain, signed = _record(dst, "plain:latest"), _record(dst, "signed:latest")
    assert plain["verified"] is False and plain["requirements"] == ["insecureAcceptAnything"]
    assert plain["scope"] == "default" and plain["policy"] == str(open_)
    assert signed["verified"] is True and signed["scope"] == f"{registry.host}/team"
    assert signed["requirements"] == ["sigstoreSigned"]
    assert signed["digest"].startswith("sha256:") and signed["at"].endswith("Z")
    [signer] = signed["signers"]
    assert signer["identity"] == f"{registry.host}/team/signed"
    assert (
        signer["key"]
        == keys.hashlib.sha256(
            keys.read_public_key(PUB).public_bytes(
                keys.serialization.Encoding.DER,
                keys.serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        ).hexdigest()
    )

    inspected = json.loads(run_cli("image", "inspect", "signed", root=dst).out)
    assert inspected["verification"] == signed
    # Both run under the open policy; under the strict one only the signed image does.
    assert _tophan(dst, open_, "run", "plain", "cat", "/etc/motd").rc == 0
    r = _tophan(dst, strict, "run", "plain", "cat", "/etc/motd")
    _refused(r, f"scope {registry.host}/team", "insecureAcceptAnything", "--verify-again")
    assert r.rc == 125 and r.out == ""
    r = _tophan(dst, strict, "run", "signed", "cat", "/etc/motd")
    assert r.rc == 0 and r.out == "hello from tophan\n", r.err
    # Accepted from the record: no signature verified, so no crypto library is even imported.
    env = {**os.environ, "TOPHAN_POLICY": str(strict), "PYTHONPROFILEIMPORTTIME": "1"}
    r = run_cli("run", "signed", "true", root=dst, env=env)
    assert r.rc == 0 and "tophan.trust.record" in r.err
    assert "cryptography" not in r.err and "nacl" not in r.err
    # --verify-again asks the registry: plain has no signature there.
    r = _tophan(dst, strict, "run", "--verify-again", "plain", "true")
    _refused(r, f"scope {registry.host}/team", "no signatures")
    assert _tophan(dst, strict, "run", "--verify-again", "signed", "true").rc == 0

    # The policy now trusts another key: the record no longer satisfies it, nor do the
    # signatures in the registry.
    keys.generate(str(tmp_path / "other"), b"")
    moved = _policy(
        tmp_path, "moved", {f"{registry.host}/team": [_signed(f"{tmp_path}/other.pub")]}
    )
    _refused(_tophan(dst, moved, "run", "signed", "true"), "no longer trusts")
    _refused(_tophan(dst, moved, "run", "--verify-again", "signed", "true"), "does not verify")
    # A reject scope refuses whatever was recorded.
    rejecting = _policy(tmp_path, "rejecting", {f"{registry.host}/team": [{"type": "reject"}]})
    _refused(_tophan(dst, rejecting, "run", "signed", "true"), "'reject'")

    # A new name for the same manifest keeps what its pull verified (and its scope).
    assert _tophan(dst, strict, "image", "tag", "signed", "renamed").rc == 0
    assert _tophan(dst, strict, "run", "renamed", "true").rc == 0


def test_verify_again_records_the_new_verdict(tmp_path: Path, registry: Registry) -> None:
    dst, _, strict = _setup(tmp_path, registry)
    # plain is signed in the registry after it was pulled: --verify-again finds it and records
    # it; then a plain run under the strict policy is accepted from the record.
    remote.sign(
        registry.ref("team/plain:1"), keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    )
    _refused(_tophan(dst, strict, "run", "plain", "true"), "insecureAcceptAnything")
    r = _tophan(dst, strict, "run", "--verify-again", "plain", "true")
    assert r.rc == 0, r.err
    assert _record(dst, "plain:latest")["verified"] is True
    assert _tophan(dst, strict, "run", "plain", "true").rc == 0


def test_local_images_follow_their_names_scope(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = store_at(root)
    busybox_layer(store, "base", tmp_path)
    store.images.create("local", ["base"])
    open_ = _policy(tmp_path, "open", {"docker.io/library/other": [{"type": "reject"}]})
    assert _tophan(root, open_, "run", "local", "true").rc == 0
    # A policy that accepts anything (the usual system default) costs a start no parser.
    anything = _policy(tmp_path, "anything", {"docker.io": [{"type": "insecureAcceptAnything"}]})
    env = {**os.environ, "TOPHAN_POLICY": str(anything), "PYTHONPROFILEIMPORTTIME": "1"}
    r = run_cli("run", "local", "true", root=root, env=env)
    assert r.rc == 0 and "tophan.trust.find" in r.err and "tophan.trust.policy" not in r.err
    # ... but only one that is exactly that: anything else meets the strict parser.
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything", "typo": 1}]}))
    _refused(_tophan(root, typo, "run", "local", "true"), "unknown key 'typo'")
    strict = _policy(tmp_path, "strict", {}, _signed(PUB))
    _refused(
        _tophan(root, strict, "run", "local", "true"), "scope default", "built or imported here"
    )
    rejecting = _policy(tmp_path, "rejecting", {"docker.io/library/local": [{"type": "reject"}]})
    _refused(_tophan(root, rejecting, "run", "local", "true"), "scope docker.io/library/local")
    # Signed in the store (identity docker.io/library/local): its stored signature satisfies
    # the sigstoreSigned scope, verified offline, and the verdict is recorded.
    r = run_cli("image", "sign", "local", "--key", KEY, root=root, env={**os.environ, **NOPASS})
    assert r.rc == 0, r.err
    r = _tophan(root, strict, "run", "local", "cat", "/etc/motd")
    assert r.rc == 0 and r.out == "hello from tophan\n", r.err
    rec = _record(root, "local:latest")
    assert rec["from"] == "store" and rec["verified"] is True and rec["scope"] == "default"
    assert _tophan(root, strict, "run", "--verify-again", "local", "true").rc == 0
    # A policy trusting another key: neither the record nor the stored signature satisfies it.
    keys.generate(str(tmp_path / "other"), b"")
    moved = _policy(tmp_path, "moved", {}, _signed(f"{tmp_path}/other.pub"))
    r = _tophan(root, moved, "run", "local", "true")
    _refused(r, "no longer trusts", "stored with it", "does not verify")
    _refused(_tophan(root, moved, "run", "--verify-again", "local", "true"), "does not verify")
    _refused(_tophan(root, strict, "run", "--verify-again", "-l", "base", "true"), "for an IMAGE")
    # And one that rejects it is not second-guessed by its signatures.
    _refused(_tophan(root, rejecting, "run", "local", "true"), "'reject'")


def test_app_start_checks_the_policy(tmp_path: Path, registry: Registry) -> None:
    dst, _, strict = _setup(tmp_path, registry)
    for name, image in (("tplain", "plain"), ("tsigned", "signed")):
        # (no private network: this test is about the policy; it makes no namespace as host)
        r = run_cli("app", "create", name, "--network", "none", image, "--", "/bin/busybox",
                    "sleep", "30", root=dst)  # fmt: skip
        assert r.rc == 0, r.err
    try:
        r = _tophan(dst, strict, "app", "start", "tplain")
        _refused(r, f"scope {registry.host}/team", "insecureAcceptAnything")
        state = json.loads(_tophan(dst, strict, "app", "ps", "-a", "--json").out)
        assert all(not row.get("alive") for row in state), state
        r = _tophan(dst, strict, "app", "start", "--verify-again", "tplain")
        _refused(r, "no signatures")
        r = _tophan(dst, strict, "app", "start", "tsigned")
        assert r.rc == 0, r.err
    finally:
        for name in ("tplain", "tsigned"):
            run_cli("app", "rm", "-f", name, root=dst)
