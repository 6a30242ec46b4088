"""`tophan build`: real builds on a busybox base, through the CLI (issue 11)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import Result, busybox_rootfs, run_cli

if TYPE_CHECKING:
    from registry_fixture import Registry

pytest_plugins = ["registry_fixture"]  # its fixtures: registry


class Env:
    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def t(self, *args: str, **kw: object) -> Result:
        return run_cli(*args, root=self.root, **kw)  # type: ignore[arg-type]

    def ok(self, *args: str, **kw: object) -> Result:
        r = self.t(*args, **kw)
        assert r.rc == 0, (args, r.out, r.err)
        return r

    def context(self, containerfile: str, files: dict[str, str | bytes] | None = None) -> Path:
        ctx = self.tmp / f"ctx-{os.urandom(4).hex()}"
        ctx.mkdir()
        (ctx / "Containerfile").write_text(containerfile)
        for rel, content in (files or {}).items():
            p = ctx / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
        return ctx

    def build(self, ctx: Path, *flags: str) -> Result:
        return self.ok("build", *flags, str(ctx))

    def inspect(self, name: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.ok("image", "inspect", name).out)

    def run(self, image: str, *cmd: str) -> str:
        return self.ok("run", image, "--", *cmd).out


@pytest.fixture
def env(tmp_path: Path) -> Env:
    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0
    e = Env(root, tmp_path)
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    e.ok("layer", "create", "bb", "--from", str(rootfs))
    e.ok("image", "create", "busybox", "-l", "bb", "--cmd", '["sh"]')
    return e


def test_build_runs_copies_and_configures(env: Env) -> None:
    ctx = env.context(
        "FROM busybox\n"
        "ENV GREETING=hello\n"
        "RUN echo $GREETING > /hello && mkdir -p /data\n"
        "COPY app.txt /srv/\n"
        "WORKDIR /srv/work\n"
        "LABEL org.example.kind=test\n"
        "MAINTAINER Jane Doe <jd@example.com>\n"
        "EXPOSE 8080\n"
        'CMD ["cat", "/hello"]\n',
        {"app.txt": "the app\n"},
    )
    r = env.build(ctx, "-t", "app:1")
    assert "STEP 1/9: FROM busybox" in r.out
    assert "STEP 3/9: RUN echo $GREETING > /hello && mkdir -p /data" in r.out
    info = env.inspect("app:1")
    cfg = info["config"]
    assert "GREETING=hello" in cfg["Env"]
    assert cfg["Cmd"] == ["cat", "/hello"]
    assert cfg["WorkingDir"] == "/srv/work"
    assert cfg["Labels"] == {"org.example.kind": "test"}  # MAINTAINER is no label
    assert info["image_config"]["author"] == "Jane Doe <jd@example.com>"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}}
    assert len(info["layers"]) == 4  # base, RUN, COPY, WORKDIR's directory
    assert env.run("app:1") == "hello\n"
    assert env.run("app:1", "cat", "/srv/app.txt") == "the app\n"
    assert env.run("app:1", "sh", "-c", "pwd") == "/srv/work\n"
    history = info["image_config"]["history"]
    assert [h.get("empty_layer", False) for h in history[-8:]] == [
        True, False, False, False, True, True, True, True,
    ]  # fmt: skip


def test_run_step_never_commits_the_etc_files_the_runtime_mounts(env: Env) -> None:
    ctx = env.context("FROM busybox\nRUN echo x > /x\n")
    env.build(ctx, "-t", "etc")
    top = env.inspect("etc")["layers"][-1]["path"]
    assert sorted(os.listdir(top)) == ["x"]


def test_fully_cached_rebuild_gives_the_same_digest(env: Env) -> None:
    ctx = env.context(
        "FROM busybox\nARG V=1\nRUN echo $V > /v\nCOPY f /f\nENV A=b\n", {"f": "one\n"}
    )
    first = env.build(ctx, "-t", "c", "-q").out.strip()
    again = env.build(ctx, "-t", "c")
    assert "Using cache" in again.out
    assert again.out.count("--> Using cache") == 2
    assert env.inspect("c")["digest"] == first
    # a changed file misses from its COPY on; a changed build arg from its RUN on
    (ctx / "f").write_text("two\n")
    r = env.build(ctx, "-t", "c")
    assert r.out.count("--> Using cache") == 1
    r = env.build(ctx, "-t", "c", "--build-arg", "V=2")
    assert r.out.count("--> Using cache") == 0
    assert env.run("c", "cat", "/v") == "2\n"
    # --no-cache runs everything again
    r = env.build(ctx, "-t", "c", "--no-cache")
    assert "Using cache" not in r.out


def test_multi_stage_copy_from_and_unused_stages_skipped(env: Env) -> None:
    ctx = env.context(
        "ARG BASE=busybox\n"
        "FROM ${BASE} AS builder\n"
        "RUN mkdir /out && echo built > /out/artifact\n"
        "FROM busybox AS broken\n"
        "RUN exit 7\n"
        "FROM busybox\n"
        "COPY --from=builder /out/artifact /artifact\n"
        "COPY --from=0 /out /out2\n"
    )
    r = env.build(ctx, "-t", "ms")
    assert "exit 7" not in r.out
    assert env.run("ms", "cat", "/artifact", "/out2/artifact") == "built\nbuilt\n"
    # --target stops early
    env.build(ctx, "-t", "only-builder", "--target", "builder")
    assert env.run("only-builder", "cat", "/out/artifact") == "built\n"


def test_failing_run_stops_with_its_code_and_keeps_the_finished_steps(env: Env) -> None:
    ctx = env.context("FROM busybox\nRUN echo ok > /ok\nRUN exit 3\n")
    r = env.t("build", "-t", "bad", str(ctx))
    assert r.rc == 3
    assert "Containerfile:3" in r.err and "exit code 3" in r.err
    assert "Traceback" not in r.err
    assert env.t("image", "inspect", "bad").rc != 0
    (ctx / "Containerfile").write_text("FROM busybox\nRUN echo ok > /ok\nRUN true\n")
    assert "--> Using cache" in env.build(ctx, "-t", "bad").out
    leftovers = [n for n in os.listdir(env.root / "tmp") if not n.startswith("trash-")]
    assert leftovers == []


def test_syntax_error_names_file_and_line(env: Env) -> None:
    ctx = env.context("FROM busybox\nRUN true\nFROB x\n")
    r = env.t("build", str(ctx))
    assert r.rc == 2
    assert "Containerfile:3" in r.err
    assert "Traceback" not in r.err


def test_heredoc_args_and_env_substitution(env: Env) -> None:
    ctx = env.context(
        "FROM busybox\n"
        "ARG NAME=world\n"
        "ENV DIR=/opt/${NAME:-none} OTHER=${UNSET:-dflt}\n"
        "RUN <<EOF\n"
        "mkdir -p $DIR\n"
        'echo "hi $NAME" > $DIR/greeting\n'
        "EOF\n"
        "WORKDIR $DIR\n"
    )
    env.build(ctx, "-t", "hd", "--build-arg", "NAME=there")
    assert env.run("hd", "cat", "/opt/there/greeting") == "hi there\n"
    cfg = env.inspect("hd")["config"]
    assert "OTHER=dflt" in cfg["Env"] and cfg["WorkingDir"] == "/opt/there"
    assert not any(e.startswith("NAME=") for e in cfg["Env"])  # ARGs are not kept


def test_containerignore_chown_chmod_and_add_tar(env: Env) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"from the tarball\n"
        info = tarfile.TarInfo("pkg/inner.txt")
        info.size, info.uid, info.gid = len(data), 0, 0
        tf.addfile(info, io.BytesIO(data))
    ctx = env.context(
        "FROM busybox\nCOPY --chown=user:user --chmod=0640 src/ /app/\nADD bundle.tgz /opt/\n",
        {
            "src/keep.txt": "keep\n",
            "src/secret.key": "no\n",
            "src/sub/also.txt": "also\n",
            ".containerignore": "src/*.key\n",
            "bundle.tgz": buf.getvalue(),
        },
    )
    env.build(ctx, "-t", "cp")
    out = env.run("cp", "sh", "-c", "ls /app; stat -c '%u:%g %a' /app/keep.txt; cat /opt/pkg/*")
    assert out.split("\n")[:3] == ["keep.txt", "sub", "1000:1000 640"]
    assert "from the tarball" in out


def test_reproducible_with_timestamp_across_two_stores(env: Env, tmp_path: Path) -> None:
    ctx = env.context('FROM busybox\nRUN echo x > /x\nCOPY f /f\nCMD ["sh"]\n', {"f": "f\n"})
    a = env.build(ctx, "-t", "r", "--timestamp", "0", "-q").out.strip()
    other = Env(tmp_path / "store2", tmp_path)
    assert run_cli("init", str(other.root)).rc == 0
    rootfs = busybox_rootfs(tmp_path / "rootfs2")
    other.ok("layer", "create", "bb", "--from", str(rootfs))
    base = env.inspect("busybox")
    # the same base image (digest) in the second store: import it from an OCI archive
    arch = tmp_path / "base.tar"
    env.ok("image", "export", "busybox", str(arch))
    other.ok("image", "import", str(arch))
    assert other.inspect("busybox")["digest"] == base["digest"]
    b = other.build(ctx, "-t", "r", "--timestamp", "0", "-q").out.strip()
    assert a == b
    assert env.inspect("r")["created"] == "1970-01-01T00:00:00Z"


def test_layer_flag_keeps_the_four_layer_model(env: Env) -> None:
    ctx = env.context(
        "FROM busybox AS base\n"
        "RUN echo base > /base.txt\n"
        "FROM base AS runtime\n"
        "RUN mkdir -p /rt && echo rt > /rt/lib && echo more > /rt/more\n"
        "RUN rm /rt/more\n"
        "FROM runtime AS app\n"
        "COPY app.sh /app/app.sh\n"
        "FROM app AS config\n"
        "ENV MODE=prod\n"
        "RUN echo conf > /app/app.conf && rm /base.txt\n",
        {"app.sh": "echo app\n"},
    )
    env.build(
        ctx, "-t", "four",
        "--layer", "base=l-base", "--layer", "runtime=l-runtime",
        "--layer", "app=l-app", "--layer", "config=l-config",
    )  # fmt: skip
    info = env.inspect("four")
    names = json.loads(env.ok("layer", "list", "--json").out)
    by_name = {la["name"]: la["digest"] for la in names}
    stack = [la["digest"] for la in info["layers"]]
    assert stack[-4:] == [by_name[n] for n in ("l-base", "l-runtime", "l-app", "l-config")]
    rt = Path(info["layers"][-3]["path"])
    assert sorted(os.listdir(rt / "rt")) == ["lib"]  # squashed: no trace of /rt/more
    cfg_layer = Path(info["layers"][-1]["path"])
    assert os.stat(cfg_layer / "base.txt").st_rdev == 0  # a whiteout of the base's file
    assert env.run("four", "sh", "-c", "cat /rt/lib /app/app.conf; ls /base.txt || true") == (
        "rt\nconf\n"
    )
    # built again: the same layers keep their names, the same image digest
    flags = ["--layer", "base=l-base", "--layer", "runtime=l-runtime", "--layer", "app=l-app"]
    again = env.build(ctx, "-t", "four", *flags, "--layer", "config=l-config")
    assert "Using cache" in again.out
    assert env.inspect("four")["digest"] == info["digest"]
    # a changed app is refused as an existing name with other content, not silently renamed
    (ctx / "app.sh").write_text("echo v2\n")
    r = env.t("build", "-t", "four", *flags, str(ctx))
    assert r.rc != 0 and "layer exists: l-app, with other content" in r.err


def test_context_from_stdin(env: Env) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("Containerfile", b"FROM busybox\nCOPY hi /hi\n"), ("hi", b"hi\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    r = env.t("build", "-t", "stdin", "-", input=buf.getvalue())
    assert r.rc == 0, r.err
    assert env.run("stdin", "cat", "/hi") == "hi\n"


def test_healthcheck_shell_and_user_in_config(env: Env) -> None:
    ctx = env.context(
        "FROM busybox\n"
        'SHELL ["/bin/sh", "-ec"]\n'
        "HEALTHCHECK --interval=5s --retries=2 CMD wget -q -O- http://localhost/ || exit 1\n"
        "USER user\n"
        "RUN id -u > /tmp/uid\n"
        'ENTRYPOINT ["sh"]\n'
    )
    env.build(ctx, "-t", "hc")
    cfg = env.inspect("hc")["config"]
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
        "Interval": 5_000_000_000,
        "Retries": 2,
    }
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["User"] == "user"
    assert "Cmd" not in cfg  # a new ENTRYPOINT drops the base's CMD (Docker's rule)
    assert env.run("hc", "-c", "cat /tmp/uid") == "1000\n"


def test_prune_drops_the_cache_and_gc_its_layers(env: Env) -> None:
    ctx = env.context("FROM busybox\nRUN echo x > /x\n")
    env.build(ctx, "-t", "p")
    env.ok("image", "rm", "p")
    before = set(os.listdir(env.root / "layers"))
    env.ok("gc")
    assert set(os.listdir(env.root / "layers")) == before  # the cache keeps the RUN layer
    r = env.ok("build", "prune")
    assert "1 cache entries" in r.out or "cache entries" in r.out
    assert len(os.listdir(env.root / "layers")) == len(before) - 1


def test_from_an_image_pulled_on_demand_and_copy_from_an_image(
    env: Env, registry: Registry
) -> None:
    ref = registry.ref("lib/busybox:1")
    env.ok("push", "--quiet", "--tls-verify=false", "busybox", ref)
    env.ok("image", "rm", "busybox")
    ctx = env.context(f"FROM {ref}\nCOPY --from={ref} /etc/passwd /copied-passwd\n")
    r = env.build(ctx, "-t", "pulled", "--tls-verify=false")
    assert f"pulling {ref}" in r.out
    assert env.run("pulled", "cat", "/copied-passwd").startswith("root:x:0:0:")
    # without a registry to pull from: one line naming the Containerfile's line
    ctx = env.context("FROM 127.0.0.1:9/none/such:1\n")
    r = env.t("build", "--tls-verify=false", str(ctx))
    assert r.rc != 0 and "Containerfile:1: image 127.0.0.1:9/none/such:1" in r.err
    assert "Traceback" not in r.err


def test_quiet_prints_only_the_digest_and_iidfile(env: Env) -> None:
    ctx = env.context("FROM busybox\nRUN echo noisy\n")
    iid = env.tmp / "iid"
    r = env.build(ctx, "-t", "q", "-q", "--iidfile", str(iid))
    assert r.out == iid.read_text() + "\n"
    assert r.out.startswith("sha256:") and "noisy" not in r.out + r.err


def test_ctrl_c_during_run_leaves_nothing_mounted_or_running(env: Env) -> None:
    import signal
    import subprocess
    import sys
    import time

    ctx = env.context("FROM busybox\nRUN echo started > /tmp/x && sleep 300\n")
    tophan = str(Path(sys.executable).parent / "tophan")
    p = subprocess.Popen(
        [tophan, "--root", str(env.root), "build", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if b"STEP 2/2" in line:
                break
        time.sleep(1)
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert p.returncode != 0
    assert b"Traceback" not in err
    with open("/proc/self/mountinfo") as f:
        assert str(env.root) not in f.read()
    sleepers = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True)
    assert sleepers.stdout == ""
    assert [n for n in os.listdir(env.root / "tmp") if not n.startswith("trash-")] == []


def test_add_url_with_checksum(env: Env) -> None:
    import hashlib
    import http.server
    import threading

    body = b"downloaded content\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/files/data.txt"
        good = "sha256:" + hashlib.sha256(body).hexdigest()
        ctx = env.context(f"FROM busybox\nADD --checksum={good} {url} /dl/\n")
        env.build(ctx, "-t", "dl")
        out = env.run("dl", "sh", "-c", "cat /dl/data.txt; stat -c %a /dl/data.txt")
        assert out == "downloaded content\n600\n"
        bad = "sha256:" + "0" * 64
        ctx = env.context(f"FROM busybox\nADD --checksum={bad} {url} /dl/\n")
        r = env.t("build", "-t", "dl-bad", str(ctx))
        assert r.rc != 0 and good.removeprefix("sha256:") in r.err and "Traceback" not in r.err
    finally:
        server.shutdown()
        server.server_close()
