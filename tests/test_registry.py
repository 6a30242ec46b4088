"""Push and pull against the real Debian docker-registry (distribution 2.8), started per test.

What each test proves is in its docstring. Fault cases damage the registry's own storage (or kill
it) and check that tophan refuses, stores nothing, and recovers when it can.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from registry_fixture import (
    PASSWORD,
    PODMAN_RUN,
    USER,
    Registry,
    TokenServer,
    basic_registry,
    busybox_layer,
    make_layer,
    plain_remote_registry,
    podman,
    random_bytes,
    registry,
    store_at,
    tls_registry,
    token_registry,
    tree_file,
)
from tophan import IntegrityError, NotFound, Store, TophanError
from tophan.image.blobs import digest_of, dumps
from tophan.image.images import ImageConfig
from tophan.image.registry import AuthError, Client, Options, Repository, pull, push
from tophan.image.spec import OCI_INDEX, OCI_MANIFEST, Platform

__all__ = [
    "basic_registry",
    "plain_remote_registry",
    "registry",
    "tls_registry",
    "token_registry",
]  # fixtures, imported for pytest


def _base_image(store: Store, work: Path, name: str = "app") -> None:
    busybox_layer(store, "base", work)
    make_layer(store, "app-layer", {"srv/app.txt": b"app v1\n"}, work)
    store.images.create(
        name,
        ["base", "app-layer"],
        config=ImageConfig(cmd=["/bin/cat", "/srv/app.txt"], env=["MODE=test"], user="0"),
    )


def _empty(store: Store) -> bool:
    """Nothing visible: no images, blobs, layers, DiffID entries, staging leftovers."""
    return (
        store.images.names() == []
        and list(store.images.blobs.all()) == []
        and os.listdir(store.path("layers")) == []
        and os.listdir(store.path("refs", "diffids")) == []
        and os.listdir(store.path("tmp")) == []
    )


def test_push_pull_roundtrip_only_missing_blobs_move(registry: Registry, tmp_path: Path) -> None:
    """An image pushed and pulled into an empty store arrives intact (manifest digest, config,
    layer contents); pushing or pulling it again moves no blob."""
    src = store_at(tmp_path / "src")
    _base_image(src, tmp_path)
    image = src.images.get("app")
    ref = registry.ref("team/app:v1")
    first = push(src, "app", ref)
    assert first.digest == image.digest
    assert set(first.blobs.values()) == {"uploaded"}
    again = push(src, "app", ref)
    assert set(again.blobs.values()) == {"exists"}
    assert again.bytes_sent == len(src.images.blobs.read(image.digest))  # the manifest only

    dst = store_at(tmp_path / "dst")
    got = pull(dst, ref)
    assert got.digest == image.digest and got.name == ref
    pulled = dst.images.get(ref)
    assert pulled.layers == image.layers and pulled.diff_ids == image.diff_ids
    assert pulled.config == image.config and pulled.config["Cmd"] == ["/bin/cat", "/srv/app.txt"]
    assert tree_file(dst, pulled, "srv/app.txt") == b"app v1\n"
    assert dst.layers.verify() and all(r.ok for r in dst.layers.verify())
    second = pull(dst, ref, "other")
    assert set(second.blobs.values()) == {"exists"}
    assert second.bytes_received == len(src.images.blobs.read(image.digest))


def test_second_image_sends_only_its_new_layer(registry: Registry, tmp_path: Path) -> None:
    """Pushing an image that shares the base sends the new layer, its config and its manifest,
    nothing more (the acceptance's dedup figure, checked exactly)."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    push(store, "app", registry.ref("team/app:v1"))
    make_layer(store, "v2-layer", {"srv/app.txt": b"app v2\n"}, tmp_path)
    v2 = store.images.create("app2", ["v2-layer"], base="app")
    report = push(store, "app2", registry.ref("team/app:v2"))
    new = v2.layer_infos[-1]
    expected = new.blob_size + v2.config_descriptor.size + len(store.images.blobs.read(v2.digest))
    assert report.bytes_sent == expected
    assert report.blobs[new.blob] == "uploaded"
    assert [report.blobs[li.blob] for li in v2.layer_infos[:-1]] == ["exists", "exists"]


def test_cross_repository_mount(registry: Registry, tmp_path: Path) -> None:
    """A blob this store pushed to one repository is mounted, not uploaded, into another."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    push(store, "app", registry.ref("one/app:v1"))
    report = push(store, "app", registry.ref("two/app:v1"))
    assert set(report.blobs.values()) == {"mounted"}
    dst = store_at(tmp_path / "d")
    assert pull(dst, registry.ref("two/app:v1")).digest == store.images.get("app").digest


def test_chunked_upload_and_tags_pagination(registry: Registry, tmp_path: Path) -> None:
    """Chunked uploads (PATCH with Content-Range, final PUT) produce the same blobs; the tag
    list follows Link pagination."""
    store = store_at(tmp_path / "s")
    make_layer(store, "big", {"data.bin": random_bytes(300_000, 1)}, tmp_path)
    store.images.create("big", ["big"], compression=None)
    opts = Options(chunk_size=65536)
    for tag in ("a", "b", "c", "d", "e"):
        push(store, "big", registry.ref(f"chunky/big:{tag}"), options=opts)
    client = Client(registry.host)
    repo = Repository(client, "chunky/big")
    assert sorted(repo.tags(page_size=2)) == ["a", "b", "c", "d", "e"]
    client.close()
    dst = store_at(tmp_path / "d")
    pull(dst, registry.ref("chunky/big:c"))
    assert tree_file(dst, dst.images.get(registry.ref("chunky/big:c")), "data.bin") == (
        random_bytes(300_000, 1)
    )


def test_index_pull_picks_platform(registry: Registry, tmp_path: Path) -> None:
    """An OCI index is resolved to this host's platform, or the one --platform names; a platform
    the index lacks is refused with the ones it has."""
    store = store_at(tmp_path / "s")
    make_layer(store, "amd", {"arch": b"amd64\n"}, tmp_path)
    make_layer(store, "arm", {"arch": b"arm64\n"}, tmp_path)
    store.images.create("amd", ["amd"], platform=Platform("linux", "amd64"))
    store.images.create("arm", ["arm"], platform=Platform("linux", "arm64", "v8"))
    entries = []
    for name in ("amd", "arm"):
        push(store, name, registry.ref(f"multi/img:{name}"))
        image = store.images.get(name)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(store.images.blobs.read(image.digest)),
                "platform": {"os": "linux", "architecture": image.platform.architecture},
            }
        )
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    client = Client(registry.host)
    Repository(client, "multi/img").put_manifest("latest", index, OCI_INDEX)
    client.close()

    dst = store_at(tmp_path / "d")
    host = Platform.host()
    if host.architecture in ("amd64", "arm64"):
        pull(dst, registry.ref("multi/img"), "default")
        want = b"amd64\n" if host.architecture == "amd64" else b"arm64\n"
        assert tree_file(dst, dst.images.get("default"), "arch") == want
    pull(
        dst,
        registry.ref("multi/img"),
        "arm",
        options=Options(platform=Platform.parse("linux/arm64")),
    )
    arm = dst.images.get("arm")
    assert tree_file(dst, arm, "arch") == b"arm64\n"
    assert arm.ref["index"] == digest_of(index)
    with pytest.raises(TophanError, match=r"no image for platform linux/s390x.*linux/amd64"):
        pull(
            dst,
            registry.ref("multi/img"),
            "x",
            options=Options(platform=Platform("linux", "s390x")),
        )


def test_referrers_fall_back_to_tag_schema(registry: Registry, tmp_path: Path) -> None:
    """distribution 2.8 has no referrers API (404): a manifest with a subject is recorded in the
    ``sha256-<hex>`` tag's index, and listing referrers reads it back, filtered by type."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    image = store.images.get("app")
    push(store, "app", registry.ref("ref/app:v1"))
    client = Client(registry.host)
    repo = Repository(client, "ref/app")
    empty = b"{}"
    repo.upload_blob(digest_of(empty), 2, lambda: io.BytesIO(empty))
    subject = {
        "mediaType": OCI_MANIFEST,
        "digest": image.digest,
        "size": len(store.images.blobs.read(image.digest)),
    }
    made = []
    for kind in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        artifact = dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": kind,
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": digest_of(empty),
                    "size": 2,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.empty.v1+json",
                        "digest": digest_of(empty),
                        "size": 2,
                    }
                ],
                "subject": subject,
                "annotations": {"org.example.kind": kind},
            }
        )
        made.append(repo.push_referrer(artifact, OCI_MANIFEST))
    found = repo.referrers(image.digest)
    assert [m["digest"] for m in found] == made
    sbom = repo.referrers(image.digest, "application/vnd.example.sbom")
    assert [m["digest"] for m in sbom] == made[:1]
    assert sbom[0]["annotations"] == {"org.example.kind": "application/vnd.example.sbom"}
    assert f"sha256-{image.digest[7:]}" in repo.tags()
    client.close()
    r = run_cli("image", "referrers", registry.ref("ref/app:v1"), "--json", root=tmp_path / "s")
    assert r.rc == 0, r.err
    assert [m["digest"] for m in json.loads(r.out)] == made


# -- auth -------------------------------------------------------------------------------------


def test_basic_auth(
    basic_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Basic auth: refused without credentials (one-line error), accepted from --creds, from a
    containers auth.json (--authfile) and from ~/.docker/config.json; a wrong password fails."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    ref = basic_registry.ref("private/app:v1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    with pytest.raises(AuthError, match="requires authentication"):
        push(store, "app", ref)
    with pytest.raises(AuthError):
        push(store, "app", ref, options=Options(creds=(USER, "wrong")))
    push(store, "app", ref, options=Options(creds=(USER, PASSWORD)))

    import base64

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {basic_registry.host: {"auth": token}}}))
    r = run_cli(
        "pull",
        ref,
        "a",
        "--authfile",
        str(authfile),
        root=tmp_path / "s",
        env={**os.environ, "HOME": str(tmp_path / "home")},
    )
    assert r.rc == 0, r.err
    docker = tmp_path / "home/.docker/config.json"
    docker.parent.mkdir(parents=True)
    docker.write_text(json.dumps({"auths": {f"https://{basic_registry.host}": {"auth": token}}}))
    dst = store_at(tmp_path / "d")
    assert pull(dst, ref).digest == store.images.get("app").digest

    r = run_cli(
        "pull", ref, root=tmp_path / "d2-missing", env={**os.environ, "HOME": "/nonexistent"}
    )
    assert r.rc == 1 and r.out == "" and len(r.err.strip().splitlines()) == 1
    run_cli("init", str(tmp_path / "d2"))
    r = run_cli(
        "pull",
        ref,
        root=tmp_path / "d2",
        env={**os.environ, "HOME": "/nonexistent", "XDG_RUNTIME_DIR": "/nonexistent"},
    )
    assert r.rc == 1 and "authentication" in r.err and len(r.err.strip().splitlines()) == 1


def test_bearer_tokens(token_registry: tuple[Registry, TokenServer], tmp_path: Path) -> None:
    """Bearer challenges: tokens are fetched from the realm with the right scopes (anonymous
    ones for public pulls, with credentials for pushes); a refused scope is an auth error."""
    reg, tokens = token_registry
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    ca = str(tokens.cert_dir)
    opts = Options(creds=(USER, PASSWORD), cert_dir=ca)
    push(store, "app", reg.ref("public/app:v1"), options=opts)
    push(store, "app", reg.ref("private/app:v1"), options=opts)
    assert any(t["user"] == USER for t in tokens.issued)
    scopes = [a for t in tokens.issued for a in t["access"]]  # type: ignore[attr-defined]
    assert {"type": "repository", "name": "public/app", "actions": ["pull", "push"]} in scopes

    anon = store_at(tmp_path / "anon")
    nocreds = Options(authfile=str(tmp_path / "none.json"), cert_dir=ca)
    (tmp_path / "none.json").write_text("{}")
    os.environ.pop("REGISTRY_AUTH_FILE", None)
    assert pull(anon, reg.ref("public/app:v1"), options=nocreds).digest
    with pytest.raises(AuthError):
        pull(anon, reg.ref("private/app:v1"), options=Options(creds=("mallory", "x"), cert_dir=ca))
    assert pull(anon, reg.ref("private/app:v1"), options=opts).digest


# -- faults -----------------------------------------------------------------------------------


def test_corrupted_blob_on_registry_disk_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A layer whose bytes changed on the registry's disk (same size) fails its digest check
    while streaming; the pull stores nothing at all."""
    src = store_at(tmp_path / "s")
    _base_image(src, tmp_path)
    ref = registry.ref("bad/app:v1")
    push(src, "app", ref)
    blob = registry.blob_file(src.images.get("app").layer_infos[0].blob)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    dst = store_at(tmp_path / "d")
    with pytest.raises(IntegrityError, match="does not match its digest"):
        pull(dst, ref)
    assert _empty(dst)
    r = run_cli("pull", ref, root=tmp_path / "d")
    assert r.rc == 1 and r.out == "" and len(r.err.strip().splitlines()) == 1
    assert _empty(dst)


def test_truncated_blob_on_registry_disk_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A layer cut short on the registry's disk is reported as truncated; nothing is stored."""
    src = store_at(tmp_path / "s")
    _base_image(src, tmp_path)
    ref = registry.ref("short/app:v1")
    push(src, "app", ref)
    blob = registry.blob_file(src.images.get("app").layer_infos[0].blob)
    blob.write_bytes(blob.read_bytes()[:1000])
    dst = store_at(tmp_path / "d")
    with pytest.raises(TophanError):
        pull(dst, ref, options=Options(retries=1))
    assert _empty(dst)


def test_manifest_naming_missing_blob(registry: Registry, tmp_path: Path) -> None:
    """A manifest whose layer blob the registry no longer has: the pull fails with a one-line
    not-found error and stores nothing; a registry refuses to accept such a manifest."""
    src = store_at(tmp_path / "s")
    _base_image(src, tmp_path)
    ref = registry.ref("gone/app:v1")
    push(src, "app", ref)
    image = src.images.get("app")
    layer = image.layer_infos[1].blob
    status, _, _ = registry.request("DELETE", f"/v2/gone/app/blobs/{layer}")
    assert status == 202
    dst = store_at(tmp_path / "d")
    with pytest.raises(NotFound, match=f"blob {layer} is missing"):
        pull(dst, ref)
    assert _empty(dst)
    client = Client(registry.host)
    with pytest.raises(IntegrityError, match="BLOB_UNKNOWN"):
        Repository(client, "gone/app").put_manifest(
            "again", src.images.blobs.read(image.digest), OCI_MANIFEST
        )
    client.close()


@pytest.mark.parametrize("chunk", [None, 1 << 20])
def test_registry_killed_mid_push_and_restarted(
    registry: Registry, tmp_path: Path, chunk: int | None
) -> None:
    """SIGKILL while a layer uploads; the registry comes back a moment later: the push retries
    and completes (monolithic: in a new session; chunked: resumed at the offset the registry
    reports, so less than the whole layer is sent again), and it pulls back intact."""
    store = store_at(tmp_path / "s")
    busybox_layer(store, "base", tmp_path)
    payload = random_bytes(12 << 20, 7)
    make_layer(store, "big", {"big.bin": payload}, tmp_path)
    store.images.create("big", ["base", "big"], compression=None)
    killed: list[bool] = []

    class KillHalfway:
        def start(self, key: str, label: str, total: int) -> None:
            pass

        def update(self, key: str, done: int) -> None:
            if not killed and done > (4 << 20):
                killed.append(True)
                registry.kill()
                registry.restart_later(0.5)

        def finish(self, key: str, status: str) -> None:
            pass

    ref = registry.ref("crash/big:v1")
    report = push(
        store, "big", ref, progress=KillHalfway(), options=Options(jobs=1, chunk_size=chunk)
    )
    assert killed and report.digest == store.images.get("big").digest
    if chunk:
        assert report.bytes_sent <= store.images.get("big").size + chunk  # resumed, not redone
    dst = store_at(tmp_path / "d")
    pull(dst, ref)
    assert tree_file(dst, dst.images.get(ref), "big.bin") == payload


def test_registry_killed_mid_pull_resumes(registry: Registry, tmp_path: Path) -> None:
    """SIGKILL while a layer downloads; the registry restarts: the download resumes (Range) and
    the image is verified and stored as if nothing happened."""
    src = store_at(tmp_path / "s")
    payload = random_bytes(12 << 20, 9)
    make_layer(src, "big", {"big.bin": payload}, tmp_path)
    src.images.create("big", ["big"], compression=None)
    ref = registry.ref("crash/pull:v1")
    push(src, "big", ref)
    killed: list[bool] = []

    class KillHalfway:
        def start(self, key: str, label: str, total: int) -> None:
            pass

        def update(self, key: str, done: int) -> None:
            if not killed and done > (4 << 20):
                killed.append(True)
                registry.kill()
                registry.restart_later(0.5)

        def finish(self, key: str, status: str) -> None:
            pass

    dst = store_at(tmp_path / "d")
    pull(dst, ref, progress=KillHalfway())
    assert killed
    assert tree_file(dst, dst.images.get(ref), "big.bin") == payload


def test_registry_down_push_fails_cleanly_then_resumes(registry: Registry, tmp_path: Path) -> None:
    """With the registry gone for good the push gives up with one line and exit 1; once it is
    back, pushing again uploads only what is still missing."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    ref = registry.ref("down/app:v1")
    push(store, "app", registry.ref("down/app:v0"))
    registry.kill()
    r = run_cli("push", "app", ref, "--retries", "1", root=tmp_path / "s")
    assert r.rc == 1 and r.out == "" and len(r.err.strip().splitlines()) == 1
    registry.start()
    report = push(store, "app", ref)
    assert set(report.blobs.values()) == {"exists"}


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_push_pull_json_and_quiet(registry: Registry, tmp_path: Path) -> None:
    """`tophan push`/`pull` print the digest / the local name, --json the transfer report;
    no TTY means no progress output; errors are one line with exit 1 (2 for usage)."""
    root = tmp_path / "s"
    store = store_at(root)
    _base_image(store, tmp_path)
    ref = registry.ref("cli/app:v1")
    r = run_cli("push", "app", ref, root=root)
    assert r.rc == 0 and r.err == "" and r.out == store.images.get("app").digest + "\n"
    r = run_cli("push", "app", ref, "--json", root=root)
    assert json.loads(r.out)["blobs"] and set(json.loads(r.out)["blobs"].values()) == {"exists"}
    dst = tmp_path / "d"
    run_cli("init", str(dst))
    r = run_cli("pull", ref, "copy", "--quiet", root=dst)
    assert (r.rc, r.out, r.err) == (0, "copy:latest\n", "")
    r = run_cli("image", "tags", ref.rsplit(":", 1)[0], "--json", root=dst)
    assert json.loads(r.out) == ["v1"]
    r = run_cli("pull", ref, "--tls-verify=maybe", root=dst)
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1
    r = run_cli("pull", "UPPER/case", root=dst)
    assert r.rc == 2 and "invalid image reference" in r.err


@pytest.mark.skipif(not os.path.exists("/usr/bin/skopeo"), reason="skopeo not installed")
def test_skopeo_interop_both_ways(registry: Registry, tmp_path: Path) -> None:
    """skopeo copies what we push (byte-identical blobs in its OCI layout); what skopeo copies
    into the registry — as OCI and as Docker schema 2 — we pull, and re-push unchanged."""
    import subprocess

    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    image = store.images.get("app")
    ref = registry.ref("interop/app:v1")
    push(store, "app", ref)
    layout = tmp_path / "skopeo-layout"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1"],
        check=True,
        capture_output=True,
    )
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    for li in image.layer_infos:
        assert (layout / "blobs/sha256" / li.blob[7:]).stat().st_size == li.blob_size

    for fmt, path in (("oci", "interop/from-skopeo:oci"), ("v2s2", "interop/from-skopeo:v2s2")):
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--dest-tls-verify=false",
                "--format",
                fmt,
                f"oci:{layout}:v1",
                f"docker://{registry.ref(path)}",
            ],
            check=True,
            capture_output=True,
        )
        dst = store_at(tmp_path / f"d-{fmt}")
        report = pull(dst, registry.ref(path))
        got = dst.images.get(registry.ref(path))
        assert got.layers == image.layers
        assert got.config["Cmd"] == ["/bin/cat", "/srv/app.txt"]
        if fmt == "v2s2":
            assert got.media_type == "application/vnd.docker.distribution.manifest.v2+json"
            r = run_cli("run", registry.ref(path), root=tmp_path / f"d-{fmt}")
            assert (r.rc, r.out) == (0, "app v1\n"), r.err  # tophan run of a pulled image
        again = push(dst, registry.ref(path), registry.ref(f"interop/again:{fmt}"))
        assert again.digest == report.digest  # stored byte for byte


@pytest.mark.skipif(not os.path.exists("/usr/bin/podman"), reason="podman not installed")
def test_podman_pulls_and_runs_what_we_push(registry: Registry, tmp_path: Path) -> None:
    """podman pulls our image from the registry and runs it: Cmd, Env and the layers as made."""
    import subprocess

    store = store_at(tmp_path / "s")
    busybox_layer(store, "base", tmp_path)
    make_layer(store, "app-layer", {"srv/app.txt": b"app v1\n"}, tmp_path)
    store.images.create(
        "app",
        ["base", "app-layer"],
        config=ImageConfig(
            cmd=["/bin/sh", "-c", "cat /srv/app.txt; echo $MODE"], env=["MODE=test"]
        ),
    )
    ref = registry.ref("podman/app:v1")
    push(store, "app", ref)
    with podman(tmp_path) as pm:
        p = subprocess.run([*pm, "pull", "--tls-verify=false", ref], capture_output=True)
        assert p.returncode == 0, p.stderr.decode()
        p = subprocess.run(
            [*pm, "run", "--rm", *PODMAN_RUN, ref], capture_output=True, text=True, timeout=120
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout == "app v1\ntest\n"


def test_pull_memory_is_bounded_by_chunks_not_layer_size(
    registry: Registry, tmp_path: Path
) -> None:
    """A 96 MiB layer streams through: the pulling process's peak RSS stays well below the
    layer's size (it is hashed, written and unpacked chunk by chunk)."""
    import subprocess
    import sys

    src = store_at(tmp_path / "s")
    size = 96 << 20
    make_layer(src, "big", {"big.bin": random_bytes(size, 3)}, tmp_path)
    src.images.create("big", ["big"], compression="zstd")
    ref = registry.ref("mem/big:v1")
    push(src, "big", ref)
    dst = tmp_path / "d"
    run_cli("init", str(dst))
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "assert p.returncode == 0, p.stderr\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    tophan = str(Path(sys.executable).parent / "tophan")
    out = subprocess.run(
        [sys.executable, "-c", probe, tophan, "--root", str(dst), "pull", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    peak_kib = int(out.strip())
    assert peak_kib * 1024 < size * 2 // 3, f"peak RSS {peak_kib} KiB for a {size >> 20} MiB layer"
    assert Store(str(dst)).images.get(ref).layers == src.images.get("big").layers


def test_progress_bars_on_a_tty(registry: Registry, tmp_path: Path) -> None:
    """On a terminal, push and pull draw one bar per blob on stderr; --quiet draws nothing."""
    import pty
    import subprocess
    import sys

    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    tophan = str(Path(sys.executable).parent / "tophan")

    def on_tty(*argv: str) -> str:
        master, slave = pty.openpty()
        p = subprocess.Popen(
            [tophan, "--root", str(tmp_path / "s"), *argv], stdout=subprocess.DEVNULL, stderr=slave
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert p.wait() == 0
        return b"".join(chunks).decode()

    shown = on_tty("push", "app", registry.ref("tty/app:v1"))
    assert "uploaded" in shown and "[####" in shown and "\x1b[" in shown
    shown = on_tty("pull", registry.ref("tty/app:v1"), "copy")
    assert "exists" in shown
    assert on_tty("push", "app", registry.ref("tty/app:v2"), "--quiet") == ""


def test_tls_verification(
    tls_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry with a certificate we do not trust is refused (one line, with the hint);
    --tls-verify=false accepts it; trusting its CA (SSL_CERT_FILE) makes it verify."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    ref = tls_registry.ref("tls/app:v1")
    r = run_cli("push", "app", ref, "--retries", "0", root=tmp_path / "s")
    assert r.rc == 1 and "not trusted" in r.err and "--tls-verify=false" in r.err
    assert len(r.err.splitlines()) == 1
    r = run_cli("push", "app", ref, "--tls-verify=false", root=tmp_path / "s")
    assert r.rc == 0, r.err
    assert tls_registry.tls is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.tls[0]))
    dst = store_at(tmp_path / "d")
    assert pull(dst, ref).digest == store.images.get("app").digest


def test_plain_http_needs_tls_verify_false_unless_localhost(
    plain_remote_registry: Registry, tmp_path: Path
) -> None:
    """A plain-http registry that is not localhost is only spoken to with --tls-verify=false
    (https is tried first, then http)."""
    store = store_at(tmp_path / "s")
    _base_image(store, tmp_path)
    ref = plain_remote_registry.ref("plain/app:v1")
    with pytest.raises(TophanError, match="cannot reach registry"):
        push(store, "app", ref, options=Options(retries=0))
    push(store, "app", ref, options=Options(tls_verify=False))
    dst = store_at(tmp_path / "d")
    assert (
        pull(dst, ref, options=Options(tls_verify=False)).digest == store.images.get("app").digest
    )
