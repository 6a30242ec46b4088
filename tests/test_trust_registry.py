"""Signatures in a real registry (docker-registry on 127.0.0.1): sign on push, sign afterwards,
several signatures, and real attacks refused (issue 12)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import run_cli
from registry_fixture import make_layer, registry, store_at
from tophan.image.registry import repository_for
from tophan.trust import keys, remote
from tophan.trust import signature as sg

if TYPE_CHECKING:
    from registry_fixture import Registry

__all__ = ["registry"]  # the fixture, imported as test_registry.py does

DATA = Path(__file__).parent / "data" / "trust"


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path, Path]:
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    r = run_cli("key", "generate", str(tmp_path / "signer"), "--passphrase-file", str(pw))
    assert r.rc == 0, r.err
    return tmp_path / "signer.key", tmp_path / "signer.pub", pw


def _image(tmp_path: Path, name: str = "app") -> Path:
    root = tmp_path / "store"
    store = store_at(root)
    make_layer(store, f"{name}-layer", {"srv/app.txt": b"app\n"}, tmp_path)
    store.images.create(name, [f"{name}-layer"])
    return root


def _sig_manifest(registry: Registry, path: str, digest: str) -> dict:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection(registry.bind, registry.port, timeout=10)
    conn.request(
        "GET",
        f"/v2/{path}/manifests/{sg.signature_tag(digest)}",
        headers={"Accept": sg.OCI_MANIFEST},
    )
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def test_sign_on_push_then_verify(tmp_path: Path, registry: Registry, signer: tuple) -> None:  # type: ignore[type-arg]
    key, pub, pw = signer
    root = _image(tmp_path)
    ref = registry.ref("team/app:1")
    r = run_cli(
        "push", "app", ref, "-q", "--sign-key", str(key), "--passphrase-file", str(pw), root=root
    )
    assert r.rc == 0, r.err
    digest = r.out.strip()
    r = run_cli("verify", ref, "--key", str(pub))
    assert r.rc == 0 and digest in r.out, r.err
    r = run_cli("verify", ref, "--key", str(pub), "--json")
    doc = json.loads(r.out)
    assert doc["verified"] and doc["digest"] == digest
    assert doc["signatures"][0]["identity"] == f"{registry.host}/team/app"
    # Structure as cosign writes it: OCI manifest, one simple-signing layer with the annotation.
    m = _sig_manifest(registry, "team/app", digest)
    assert m["mediaType"] == sg.OCI_MANIFEST
    (layer,) = m["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert set(layer["annotations"]) == {"dev.cosignproject.cosign/signature"}


def test_sign_afterwards_several_signatures_and_wrong_key(
    tmp_path: Path,
    registry: Registry,
    signer: tuple,  # type: ignore[type-arg]
) -> None:
    key, pub, pw = signer
    root = _image(tmp_path)
    ref = registry.ref("team/app:1")
    assert run_cli("push", "app", ref, "-q", root=root).rc == 0
    r = run_cli("verify", ref, "--key", str(pub))
    assert r.rc == 1 and "no signatures" in r.err and len(r.err.strip().splitlines()) == 1
    assert run_cli("sign", ref, "--key", str(key), "--passphrase-file", str(pw)).rc == 0
    # A second signer, with the key cosign generated (passphrase "test"), appends.
    env = {**os.environ, "TOPHAN_PASSPHRASE": "test"}
    r = run_cli("sign", ref, "--key", str(DATA / "cosign-zarf.key"), env=env)
    assert r.rc == 0, r.err
    digest = r.out.split()[0]
    assert len(_sig_manifest(registry, "team/app", digest)["layers"]) == 2
    for pubkey in (pub, DATA / "cosign-zarf.pub"):
        doc = json.loads(run_cli("verify", ref, "--key", str(pubkey), "--json").out)
        assert [s["ok"] for s in doc["signatures"]].count(True) == 1
    keys.generate(str(tmp_path / "stranger"), b"x")
    r = run_cli("verify", ref, "--key", str(tmp_path / "stranger.pub"))
    assert r.rc == 1 and "does not verify" in r.err
    # A wrong passphrase stops before anything moves.
    bad = tmp_path / "bad"
    bad.write_text("nope")
    r = run_cli("sign", ref, "--key", str(key), "--passphrase-file", str(bad))
    assert r.rc == 1 and "wrong passphrase" in r.err and "Traceback" not in r.err


def _put_signature(registry: Registry, ref: str, digest: str, sig: sg.Signature) -> None:
    repo, _ = repository_for(ref)
    try:
        remote.attach(repo, digest, sig)
    finally:
        repo.client.close()


def test_attacks_are_refused(tmp_path: Path, registry: Registry) -> None:
    key = keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    pub = key.public_key()
    root = _image(tmp_path)
    assert run_cli("push", "app", registry.ref("team/app:1"), root=root).rc == 0
    assert run_cli("push", "app", registry.ref("other/app:1"), root=root).rc == 0
    ref = registry.ref("team/app:1")
    digest, _ = remote.sign(registry.ref("other/app:1"), key)
    # 1. A signature for another repository (the same digest) copied next to this image.
    _, results = remote.verify(registry.ref("other/app:1"), pub)
    assert results[0].ok
    other_sig = remote.fetch(repository_for(registry.ref("other/app:1"))[0], digest)[0]
    _put_signature(registry, ref, digest, other_sig)
    _, results = remote.verify(ref, pub)
    assert not results[0].ok and "identity" in results[0].reason
    # 2. A tampered payload: the identity rewritten to this repository, signature kept.
    forged = other_sig.payload.replace(b"other/app", b"team/app")
    _put_signature(registry, ref, digest, sg.Signature(forged, other_sig.signature_b64))
    # 3. A genuine signature, by the right key, of another digest.
    elsewhere = sg.sign_payload(
        key, sg.make_payload(f"{registry.host}/team/app", "sha256:" + "e" * 64)
    )
    _put_signature(registry, ref, digest, elsewhere)
    _, results = remote.verify(ref, pub)
    assert [r.ok for r in results] == [False, False, False]
    reasons = " ".join(r.reason for r in results)
    assert "does not verify" in reasons and "another image" in reasons
    r = run_cli("verify", ref, "--key", str(DATA / "cosign-zarf.pub"))
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1


def test_absurd_payload_size_is_not_downloaded(tmp_path: Path, registry: Registry) -> None:
    key = keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    root = _image(tmp_path)
    ref = registry.ref("team/app:1")
    assert run_cli("push", "app", ref, root=root).rc == 0
    digest, _ = remote.sign(ref, key)
    repo, _ = repository_for(ref)
    try:
        m = _sig_manifest(registry, "team/app", digest)
        m["layers"][0]["size"] = 1 << 40
        data = json.dumps(m).encode()
        repo.put_manifest(sg.signature_tag(digest), data, sg.OCI_MANIFEST)
    finally:
        repo.client.close()
    _, results = remote.verify(ref, key.public_key())
    assert not results[0].ok


def test_skopeo_copy_under_a_sigstore_policy(tmp_path: Path, registry: Registry) -> None:
    """Runs wherever skopeo verifies sigstore signatures; Debian's cannot (sigstore disabled)."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo not installed")
    key = keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    root = _image(tmp_path)
    ref = registry.ref("team/app:1")
    assert run_cli("push", "app", ref, root=root).rc == 0
    remote.sign(ref, key)
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        registry.host: [
                            {
                                "type": "sigstoreSigned",
                                "keyPath": str(DATA / "cosign-zarf.pub"),
                                "signedIdentity": {"type": "matchRepository"},
                            }
                        ]
                    },
                    "dir": {"": [{"type": "insecureAcceptAnything"}]},
                },
            }
        )
    )
    regd = tmp_path / "registries.d"
    regd.mkdir()
    (regd / "local.yaml").write_text(
        f"docker:\n  {registry.host}:\n    use-sigstore-attachments: true\n"
    )
    p = subprocess.run(
        [
            skopeo,
            "--policy",
            str(policy),
            "--registries.d",
            str(regd),
            "copy",
            "--src-tls-verify=false",
            f"docker://{ref}",
            f"dir:{tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "sigstore disabled" in p.stderr.lower() or (
        "sigstore" in p.stderr and "not supported" in p.stderr
    ):
        pytest.skip(f"this skopeo has sigstore disabled: {p.stderr.strip()[:200]}")
    assert p.returncode == 0, p.stderr


def _policy(tmp_path: Path, docker: dict, default: str = "reject") -> Path:  # type: ignore[type-arg]
    p = tmp_path / f"policy-{os.urandom(3).hex()}.json"
    p.write_text(json.dumps({"default": [{"type": default}], "transports": {"docker": docker}}))
    return p


def test_policy_at_pull(tmp_path: Path, registry: Registry) -> None:
    key = keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    src = _image(tmp_path)
    assert run_cli("push", "app", registry.ref("team/app:1"), root=src).rc == 0
    assert run_cli("push", "app", registry.ref("team/unsigned:1"), root=src).rc == 0
    assert run_cli("push", "app", registry.ref("other/app:1"), root=src).rc == 0
    remote.sign(registry.ref("team/app:1"), key)
    remote.sign(registry.ref("other/app:1"), key)
    pub = str(DATA / "cosign-zarf.pub")
    signed = {
        "type": "sigstoreSigned",
        "keyPath": pub,
        "signedIdentity": {"type": "matchRepository"},
    }
    pol = _policy(tmp_path, {f"{registry.host}/team": [signed]})
    dst = tmp_path / "dst"
    store_at(dst)

    def pull(ref: str, policy: Path) -> object:
        return run_cli("pull", "-q", "--policy", str(policy), registry.ref(ref), root=dst)

    r = pull("team/app:1", pol)
    assert r.rc == 0, r.err
    listed = run_cli("image", "list", "--json", root=dst).out
    assert "team/app" in listed
    # Unsigned under the signed scope: refused, one line naming the scope, nothing stored.
    r = pull("team/unsigned:1", pol)
    assert r.rc == 1 and f"scope {registry.host}/team" in r.err and "no signatures" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert "unsigned" not in run_cli("image", "list", "--json", root=dst).out
    # Outside every scope: default reject.
    r = pull("other/app:1", pol)
    assert r.rc == 1 and "scope default" in r.err and "reject" in r.err
    # Signed for other/app, copied under team/: matchRepository refuses it.
    digest = remote.verify(registry.ref("other/app:1"), key.public_key())[0]
    sig = remote.fetch(repository_for(registry.ref("other/app:1"))[0], digest)[0]
    assert run_cli("push", "app", registry.ref("team/copied:1"), root=src).rc == 0
    _put_signature(registry, registry.ref("team/copied:1"), digest, sig)
    r = pull("team/copied:1", pol)
    assert r.rc == 1 and "identity" in r.err
    # A wrong key in the policy.
    keys.generate(str(tmp_path / "other"), b"")
    wrong = {**signed, "keyPath": str(tmp_path / "other.pub")}
    r = pull("team/app:1", _policy(tmp_path, {f"{registry.host}/team": [wrong]}))
    assert r.rc == 1 and "does not verify" in r.err
    # Malformed policies are one-line errors: unknown keys, keyless, absurd sizes.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything", "typo": 1}]}))
    r = pull("team/app:1", bad)
    assert r.rc == 1 and "unknown key 'typo'" in r.err
    bad.write_text(json.dumps({"default": [{"type": "sigstoreSigned", "fulcio": {}}]}))
    assert "fulcio" in pull("team/app:1", bad).err
    bad.write_bytes(b"[" * (2 << 20))
    r = pull("team/app:1", bad)
    assert r.rc == 1 and "larger" in r.err and "Traceback" not in r.err
