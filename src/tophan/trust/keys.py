"""Cosign/sigstore key pairs: ECDSA P-256, the private key encrypted as cosign writes it.

The private key PEM ("ENCRYPTED SIGSTORE PRIVATE KEY", older cosign "ENCRYPTED COSIGN PRIVATE
KEY") wraps a JSON document (go-securesystemslib's ``encrypted`` package): scrypt N=32768 r=8
p=1 derives a 32-byte key from the passphrase and a 32-byte salt; NaCl secretbox (XSalsa20-
Poly1305, 24-byte nonce) seals the PKCS#8 DER of the key. Only well-kept libraries do the crypto
(``cryptography``, PyNaCl); this module only moves bytes between them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tophan._internal.fs import atomic_write
from tophan.errors import TophanError, UsageError

PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
PEM_TYPES = (PEM_TYPE, "ENCRYPTED COSIGN PRIVATE KEY")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
# Beyond what cosign writes; a hostile key file must not make us allocate gigabytes in scrypt.
_MAX_SCRYPT_N = 1 << 20
_MAX_KEY_FILE = 64 * 1024


class KeyFileError(TophanError):
    """A key file is unreadable, malformed, or the passphrase does not open it."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{what} is not base64 text", "the key file is damaged")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise KeyFileError(f"{what} is not valid base64", "the key file is damaged") from e


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * r * n, dklen=32)


def _pem_wrap(kind: str, der: bytes) -> bytes:
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"]) + "\n").encode()


def _pem_unwrap(data: bytes, path: str) -> bytes:
    text = data.decode("ascii", "replace").strip().splitlines()
    for kind in PEM_TYPES:
        begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
        if begin in text and end in text:
            body = "".join(text[text.index(begin) + 1 : text.index(end)])
            return _unb64(body, f"{path}: PEM body")
    raise KeyFileError(
        f"{path} is not a cosign private key",
        "expected an 'ENCRYPTED SIGSTORE PRIVATE KEY' PEM, as `tophan key generate` or"
        " `cosign generate-key-pair` write",
    )


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """The encrypted PEM cosign reads, for ``key``."""
    import nacl.secret
    import nacl.utils

    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(32)
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(der, nonce).ciphertext
    # Field order as go-securesystemslib marshals its structs (cosign's files look the same).
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return _pem_wrap(PEM_TYPE, json.dumps(doc, separators=(",", ":")).encode())


def _field(doc: object, name: str, path: str) -> dict[str, object]:
    value = doc.get(name) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise KeyFileError(
            f"{path}: the encrypted key has no '{name}' object", "the file is damaged"
        )
    return value


def decrypt_private_key(data: bytes, passphrase: bytes, path: str) -> ec.EllipticCurvePrivateKey:
    """Open a cosign/sigstore encrypted private key PEM."""
    import nacl.exceptions
    import nacl.secret

    try:
        doc = json.loads(_pem_unwrap(data, path))
    except ValueError as e:
        raise KeyFileError(f"{path}: the encrypted key is not JSON", "the file is damaged") from e
    kdf, cipher = _field(doc, "kdf", path), _field(doc, "cipher", path)
    params = kdf.get("params")
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise KeyFileError(
            f"{path}: unsupported key encryption {kdf.get('name')}/{cipher.get('name')}",
            "cosign keys use scrypt and nacl/secretbox",
        )
    if not isinstance(params, dict) or not all(
        isinstance(params.get(k), int) and not isinstance(params.get(k), bool)
        for k in ("N", "r", "p")
    ):
        raise KeyFileError(f"{path}: scrypt parameters missing", "the file is damaged")
    n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    if not (1 < n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16):
        raise KeyFileError(
            f"{path}: scrypt parameters N={n} r={r} p={p} are out of range",
            "cosign writes N=32768 r=8 p=1; refusing to spend unbounded memory",
        )
    salt = _unb64(kdf.get("salt"), f"{path}: salt")
    nonce = _unb64(cipher.get("nonce"), f"{path}: nonce")
    sealed = _unb64(doc.get("ciphertext"), f"{path}: ciphertext")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError(f"{path}: the nonce is not 24 bytes", "the file is damaged")
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, n, r, p))
    try:
        der = box.decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError as e:
        raise KeyFileError(
            f"cannot open {path}: wrong passphrase",
            "give the passphrase it was created with (--passphrase-file or $TOPHAN_PASSPHRASE)",
        ) from e
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path}: not an ECDSA key", "tophan signs with ECDSA P-256 keys")
    return key


def read_private_key(path: str, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    return decrypt_private_key(_read(path), passphrase, path)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read key {path}: {e.strerror}", "check the path") from e
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path} is larger than any key file", "give the .key or .pub file")
    return data


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """A PEM public key (``PUBLIC KEY``), as cosign writes it."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise KeyFileError(f"{what} is not a PEM public key", "give the .pub file") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{what} is not an ECDSA public key", "cosign keys are ECDSA P-256")
    return key


def read_public_key(path: str) -> ec.EllipticCurvePublicKey:
    return load_public_key(_read(path), path)


def generate(prefix: str, passphrase: bytes) -> tuple[str, str]:
    """Write ``PREFIX.key`` (0600, encrypted) and ``PREFIX.pub``; refuse to overwrite."""
    key_path, pub_path = f"{prefix}.key", f"{prefix}.pub"
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise UsageError(f"{path} exists", "choose another prefix or remove the old key pair")
    key = ec.generate_private_key(ec.SECP256R1())
    atomic_write(key_path, encrypt_private_key(key, passphrase), 0o600)
    atomic_write(pub_path, public_pem(key.public_key()), 0o644)
    return key_path, pub_path


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 over ``data``, ASN.1 DER, as cosign signs payloads."""
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
