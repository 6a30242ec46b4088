"""containers-registries.d(5) (issue 12): use-sigstore-attachments per scope decides whether
signatures are read from and written to a registry; files parsed strictly. A real
docker-registry on 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import run_cli
from registry_fixture import make_layer, registry, store_at
from tophan.image.spec import remote_reference
from tophan.trust import keys, registries, remote

if TYPE_CHECKING:
    from registry_fixture import Registry

__all__ = ["registry"]

DATA = Path(__file__).parent / "data" / "trust"
KEY, PUB = str(DATA / "cosign-zarf.key"), str(DATA / "cosign-zarf.pub")


def _dir(tmp: Path, **files: str) -> Path:
    d = tmp / f"registries.d-{os.urandom(3).hex()}"
    d.mkdir()
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)
    return d


def test_scopes_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _dir(
        tmp_path,
        a="default-docker:\n  use-sigstore-attachments: false\n",
        b="docker:\n  reg.example/team:\n    use-sigstore-attachments: true\n"
        "  reg.example/team/old:\n    lookaside: https://sigs.example/\n"
        "  '*.example.org':\n    use-sigstore-attachments: true\n",
        c="# only a comment\n",
    )
    monkeypatch.setenv("TOPHAN_REGISTRIES_D", str(d))
    use = lambda r: registries.use_attachments(remote_reference(r))  # noqa: E731
    assert use("reg.example/team/web:1") == (True, "reg.example/team")
    # A scope that says nothing of attachments falls through to the next one.
    assert use("reg.example/team/old:1") == (True, "reg.example/team")
    assert use("reg.example/other:1") == (False, "default-docker")
    assert use("a.b.example.org/x") == (True, "*.example.org")
    monkeypatch.setenv("TOPHAN_REGISTRIES_D", str(tmp_path / "none"))
    assert use("reg.example/x") == (True, "tophan's default")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a": "docker:\n  r.example:\n    use-sigstore-attachment: true\n"}, "unknown key"),
        ({"a": "docker:\n  r.example:\n    use-sigstore-attachments: 'yes'\n"}, "true or false"),
        ({"a": "dockr: {}\n"}, "unknown key 'dockr'"),
        ({"a": "docker: [1, 2]\n"}, "not a mapping"),
        ({"a": "- 1\n- 2\n"}, "not a mapping"),
        ({"a": "docker: {r.example: {}}\n", "b": "docker: {r.example: {}}\n"}, "set twice"),
        ({"a": "default-docker: {}\n", "b": "default-docker: {}\n"}, "also set"),
        ({"a": "docker: {r.example: [unclosed\n"}, "not valid YAML"),
        ({"a": "a: &a [*a, *a]\nb: !!python/object:os.system {}\n"}, "not valid YAML"),
        ({"a": "x" * (2 << 20)}, "larger than"),
    ],
)
def test_hostile_files_are_one_line_errors(
    tmp_path: Path, registry: Registry, files: dict[str, str], expected: str
) -> None:
    d = _dir(tmp_path, **files)
    env = {**os.environ, "TOPHAN_REGISTRIES_D": str(d), "TOPHAN_PASSPHRASE": "test"}
    r = run_cli("sign", registry.ref("team/app:1"), "--key", KEY, env=env)
    assert r.rc != 0 and expected in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_attachments_off_for_a_registry(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "src"
    store = store_at(src)
    make_layer(store, "l", {"a": b"a\n"}, tmp_path)
    store.images.create("app", ["l"])
    assert run_cli("push", "app", registry.ref("team/app:1"), root=src).rc == 0
    assert run_cli("push", "app", registry.ref("other/app:1"), root=src).rc == 0
    remote.sign(registry.ref("team/app:1"), keys.read_private_key(KEY, b"test"))
    off = _dir(
        tmp_path,
        a=f"default-docker:\n  use-sigstore-attachments: false\n"
        f"docker:\n  {registry.host}/other:\n    use-sigstore-attachments: true\n",
    )
    env = {**os.environ, "TOPHAN_REGISTRIES_D": str(off), "TOPHAN_PASSPHRASE": "test"}
    # Writing is refused, naming the scope; so is push --sign-key, before anything is pushed.
    r = run_cli("sign", registry.ref("team/app:1"), "--key", KEY, env=env)
    assert r.rc == 2 and "default-docker" in r.err and "use-sigstore-attachments" in r.err
    r = run_cli("push", "app", registry.ref("team/new:1"), "--sign-key", KEY, root=src, env=env)
    assert r.rc == 2 and "default-docker" in r.err
    # A push of an image with stored signatures goes through; its signatures stay home.
    assert run_cli("image", "sign", "app", "--key", KEY, root=src, env=env).rc == 0
    r = run_cli("push", "app", registry.ref("team/carried:1"), root=src, env=env)
    assert r.rc == 0, r.err
    r = run_cli("verify", registry.ref("team/carried:1"), "--key", PUB)
    assert r.rc == 1 and "no signatures" in r.err
    # Reading: the signature there is not looked at.
    r = run_cli("verify", registry.ref("team/app:1"), "--key", PUB, env=env)
    assert r.rc == 1 and "no signatures" in r.err
    policy = tmp_path / "policy.json"
    signed = {
        "type": "sigstoreSigned",
        "keyPath": PUB,
        "signedIdentity": {"type": "matchRepository"},
    }
    policy.write_text(json.dumps({"default": [signed]}))
    dst = tmp_path / "dst"
    store_at(dst)
    r = run_cli("pull", "--policy", str(policy), registry.ref("team/app:1"), root=dst, env=env)
    assert r.rc == 1 and "no signatures" in r.err
    # The scope that says true works as before.
    r = run_cli("sign", registry.ref("other/app:1"), "--key", KEY, env=env)
    assert r.rc == 0, r.err
    r = run_cli(
        "pull", "-q", "--policy", str(policy), registry.ref("other/app:1"), root=dst, env=env
    )
    assert r.rc == 0, r.err
