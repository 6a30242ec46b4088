"""Keys and signatures without a registry: cosign's artifacts read, ours shaped like its."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from conftest import run_cli
from tophan.trust import keys
from tophan.trust import signature as sg

DATA = Path(__file__).parent / "data" / "trust"


def test_reads_a_key_cosign_generated_and_verifies_what_cosign_signed() -> None:
    key = keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    pub = keys.read_public_key(str(DATA / "cosign-zarf.pub"))
    assert keys.public_pem(key.public_key()) == (DATA / "cosign-zarf.pub").read_bytes()
    # tophan signs with cosign's key; cosign's public key verifies it.
    assert keys.verify(pub, keys.sign(key, b"payload"), b"payload")


def test_verifies_an_image_signature_cosign_made() -> None:
    """A real cosign container image signature (containers/image's test data): the payload
    bytes as cosign wrote them, its signature, the signing certificate's key."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((DATA / "cosign-image-cert.pem").read_bytes())
    pub = cert.public_key()
    assert isinstance(pub, keys.ec.EllipticCurvePublicKey)
    payload = (DATA / "cosign-image-payload.json").read_bytes()
    sig = sg.Signature(payload, (DATA / "cosign-image-payload.sig").read_text().strip())
    digest = "sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f"
    repo = "192.168.64.2:5000/test-repo-2100826901021538654/alpine"
    result = sg.check(0, sig, pub, digest, lambda ident: ident == repo)
    assert result.ok, result.reason
    # Byte-compatible: tophan's payload for the same identity and digest is cosign's, exactly.
    assert sg.make_payload(repo, digest) == payload
    assert not sg.check(0, sg.Signature(payload + b" ", sig.signature_b64), pub, digest, bool).ok
    assert "another image" in sg.check(0, sig, pub, "sha256:" + "0" * 64, bool).reason


def test_wrong_passphrase_is_one_line() -> None:
    with pytest.raises(keys.KeyFileError, match="wrong passphrase"):
        keys.read_private_key(str(DATA / "cosign-zarf.key"), b"not-it")


def test_generated_key_has_cosigns_format_and_mode(tmp_path: Path) -> None:
    key_path, pub_path = keys.generate(str(tmp_path / "k"), b"pw")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    text = Path(key_path).read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = "".join(text.strip().splitlines()[1:-1])
    doc = json.loads(base64.b64decode(body))
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert doc["cipher"]["name"] == "nacl/secretbox"
    key = keys.read_private_key(key_path, b"pw")
    assert keys.public_pem(key.public_key()) == Path(pub_path).read_bytes()
    with pytest.raises(Exception, match="exists"):
        keys.generate(str(tmp_path / "k"), b"pw")


def test_hostile_scrypt_parameters_are_refused(tmp_path: Path) -> None:
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": 1 << 30, "r": 8, "p": 1}, "salt": "AAAA"},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(b"0" * 24).decode()},
        "ciphertext": "AAAA",
    }
    pem = keys._pem_wrap(keys.PEM_TYPE, json.dumps(doc).encode())
    with pytest.raises(keys.KeyFileError, match="out of range"):
        keys.decrypt_private_key(pem, b"", "evil.key")
    big = tmp_path / "big.key"
    big.write_bytes(b"A" * (1 << 20))
    with pytest.raises(keys.KeyFileError, match="larger"):
        keys.read_private_key(str(big), b"")


def test_payload_is_cosigns_byte_for_byte() -> None:
    # The payload cosign writes (sigstore/cosign pkg/cosign/payload, Go's encoder): this order,
    # no spaces, "optional":null.
    want = (
        b'{"critical":{"identity":{"docker-reference":"reg.example/team/web"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"a" * 64 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    assert sg.make_payload("reg.example/team/web", "sha256:" + "a" * 64) == want
    assert sg.signature_tag("sha256:" + "b" * 64) == "sha256-" + "b" * 64 + ".sig"


def test_check_refuses_tamper_wrong_key_other_digest(tmp_path: Path) -> None:
    key = keys.read_private_key(str(DATA / "cosign-zarf.key"), b"test")
    pub = key.public_key()
    digest, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    good = sg.sign_payload(key, sg.make_payload("r/x", digest))
    same = lambda ident: ident == "r/x"  # noqa: E731
    assert sg.check(0, good, pub, digest, same).ok
    tampered = sg.Signature(good.payload.replace(b"r/x", b"r/y"), good.signature_b64)
    assert "does not verify" in sg.check(0, tampered, pub, digest, same).reason
    keys.generate(str(tmp_path / "other"), b"x")
    wrong = keys.read_public_key(str(tmp_path / "other.pub"))
    assert not sg.check(0, good, wrong, digest, same).ok
    assert "another image" in sg.check(0, good, pub, other, same).reason
    assert "identity" in sg.check(0, good, pub, digest, lambda i: False).reason


def test_cli_key_generate(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    r = run_cli("key", "generate", str(tmp_path / "a"), "--passphrase-file", str(pw))
    assert r.rc == 0, r.err
    assert keys.read_private_key(str(tmp_path / "a.key"), b"secret")
    env = {**os.environ, "TOPHAN_PASSPHRASE": ""}
    r = run_cli("key", "generate", str(tmp_path / "b"), env=env)
    assert r.rc == 2 and "--no-passphrase" in r.err and len(r.err.splitlines()) == 1
    r = run_cli("key", "generate", str(tmp_path / "b"), "--no-passphrase")
    assert r.rc == 0 and keys.read_private_key(str(tmp_path / "b.key"), b"")


def test_policy_scopes_and_gpg_requirements(tmp_path: Path) -> None:
    from tophan.image.spec import remote_reference
    from tophan.trust import policy

    doc = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "registry.access.redhat.com": [{"type": "signedBy", "keyType": "GPGKeys"}],
                "reg.example/team": [{"type": "insecureAcceptAnything"}],
                "reg.example/team/web:1": [{"type": "reject"}],
                "*.example.org": [{"type": "insecureAcceptAnything"}],
            },
            "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }
    p = policy.parse(json.dumps(doc).encode(), str(tmp_path / "p.json"))
    scope = lambda r: p.scope_for(remote_reference(r))[0]  # noqa: E731
    assert scope("reg.example/team/web:1") == "reg.example/team/web:1"
    assert scope("reg.example/team/web:2") == "reg.example/team"
    assert scope("reg.example/teamster/x") == "default"
    assert scope("a.b.example.org/x") == "*.example.org"
    never = lambda key, ok: []  # noqa: E731
    assert (
        "insecureAcceptAnything"
        in policy.evaluate(p, remote_reference("reg.example/team/a"), never).summary
    )
    with pytest.raises(policy.Refused, match="signedBy"):
        policy.evaluate(p, remote_reference("registry.access.redhat.com/ubi9"), never)
    with pytest.raises(policy.Refused, match="scope default"):
        policy.evaluate(p, remote_reference("elsewhere.io/x"), never)
