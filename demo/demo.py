"""`make demo`: tophan end to end through the real CLI, on the local embedded store.

1. `tophan build`: a Containerfile of four stages — base OS (a busybox-static rootfs tar),
   runtime, app, config — kept as four named layers (`--layer STAGE=NAME`), the image made of
   them; built again, every step comes from the cache and the digest is the same;
2. (as a non-root user, where build needs root: the layers made by hand instead — an imported
   tar, a workspace committed, a directory — and an image of them);
3. an app from it — busybox httpd — with memory and pids limits and the image's HEALTHCHECK,
   on the default private network with its port published (`-p 8080:8080`): `app ps` until
   healthy, the page fetched from the host through the published port and from inside its
   network namespace, then stopped: nothing left mounted;
4. its SBOM (CycloneDX) and a vulnerability scan against real OSV records;
5. the image pushed to a local OCI registry (Debian's docker-registry), signed on the way with a
   cosign-compatible key and verified; pulled into a second, empty store under a policy that
   requires that signature (an unsigned image is refused), where it runs again.

It runs in a network namespace of its own (`unshare -n`), which plays the host: the private
network's bridge and nftables rules go there and vanish with it, and the machine's own network
configuration is never changed. As a non-root user it re-runs itself inside `unshare -Urmn`
(and without limits: no cgroup can be delegated there).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BUILD = HERE.parent / "build"
STORE = BUILD / "demo-store"
STORE2 = BUILD / "demo-store-pulled"
PRIVILEGED = os.geteuid() == 0 and os.environ.get("TOPHAN_DEMO_NS") != "1"


def tophan(*args: str, quiet: bool = False, root: Path = STORE, fails: bool = False) -> str:
    """Run and show a tophan command; ``fails``: it must be refused (its message is shown)."""
    cmd = [str(BIN / "tophan"), "--root", str(root), *args]
    if not quiet:
        where = "" if root == STORE else f"--root {root.name} "
        print(f"  $ tophan {where}{shlex.join(args)}")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if fails:
        if p.returncode == 0:
            sys.exit(f"demo failed: `tophan {shlex.join(args)}` was not refused")
        print(f"    {p.stderr.strip()}  (exit {p.returncode})")
        return p.stdout
    if p.returncode != 0:
        sys.exit(f"demo failed: {p.stderr.strip()}")
    if p.stdout and not quiet:
        for line in p.stdout.rstrip("\n").splitlines():
            print(f"    {line}")
    return p.stdout


def build_base_tar(work: Path) -> Path:
    root = work / "rootfs"
    for d in ("bin", "etc", "tmp", "www"):
        (root / d).mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "httpd", "wget", "id", "hostname", "ps", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/www:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nwww:x:33:\n")
    (root / "tmp").chmod(0o1777)
    out = work / "base.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(root, arcname=".")
    return out


def main() -> None:
    if os.environ.get("TOPHAN_DEMO_NET") != "1":
        env = {**os.environ, "TOPHAN_DEMO_NET": "1"}
        flags = "-n" if os.geteuid() == 0 else "-Urmn"
        if os.geteuid() != 0:
            env["TOPHAN_DEMO_NS"] = "1"
        os.execvpe("unshare", ["unshare", flags, sys.executable, __file__], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for store in (STORE, STORE2):
        if store.exists():
            subprocess.run([str(BIN / "tophan"), "--root", str(store), "app", "rm", "-f", "web"],
                           capture_output=True)  # fmt: skip
            subprocess.run(["rm", "-rf", str(store)], check=True)
    work = Path(tempfile.mkdtemp(prefix="tophan-demo-"))
    try:
        if PRIVILEGED:
            build(work)
        else:
            layers(work)
            image()
        app()
        scan(work)
        registry(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


CONTAINERFILE = """\
# base: the OS
FROM scratch AS base
ADD base.tar /

# runtime: what the app needs to run (and an old Python library, for the scan to find)
FROM base AS runtime
COPY site/ /usr/lib/python3/dist-packages/
RUN mkdir -p /srv/bin && printf '#!/bin/sh\\nexec httpd -f -p "$BIND" -c /etc/httpd.conf\\n' \\
      > /srv/bin/serve && chmod 0755 /srv/bin/serve

# app: the application itself
FROM runtime AS app
COPY www/ /www/

# config: this deployment's settings
FROM app AS config
COPY httpd.conf /etc/httpd.conf
ENV BIND=8080
EXPOSE 8080
HEALTHCHECK --interval=500ms CMD wget -q -O /dev/null http://127.0.0.1:8080/health
CMD ["/srv/bin/serve"]
"""


def build(work: Path) -> None:
    ctx = work / "context"
    (ctx / "www").mkdir(parents=True)
    shutil.move(build_base_tar(work), ctx / "base.tar")
    (ctx / "www/index.html").write_text("<h1>hello from a tophan app</h1>\n")
    (ctx / "www/health").write_text("ok\n")
    (ctx / "httpd.conf").write_text("H:/www\n")
    dist = "urllib3-1.26.4.dist-info"  # real metadata (tests/data/scan/SOURCES.md)
    shutil.copytree(HERE.parent / "tests/data/scan/pypi" / dist, ctx / "site" / dist)
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    print("1. build: a Containerfile of four stages, each kept as one named layer")
    for line in CONTAINERFILE.splitlines():
        print(f"    | {line}")
    tophan("init", str(STORE))
    layer_flags = [f"--layer={s}={s}" for s in ("base", "runtime", "app", "config")]
    tophan("build", "-t", "web", *layer_flags, str(ctx))
    tophan("layer", "list")
    print("   built again: every step from the cache, the same image digest")
    first = json.loads(tophan("image", "inspect", "web", quiet=True))["digest"]
    out = tophan("build", "-t", "web", *layer_flags, str(ctx), quiet=True)
    again = json.loads(tophan("image", "inspect", "web", quiet=True))["digest"]
    print(f"    {out.count('Using cache')} steps from the cache; same digest: {first == again}")
    if first != again:
        sys.exit("demo failed: a cached rebuild changed the image")
    tophan("image", "list")


def layers(work: Path) -> None:
    base_tar = build_base_tar(work)
    print(f"1. layers: a base from a busybox-static rootfs ({base_tar.stat().st_size:,} B tar)")
    tophan("init", str(STORE))
    tophan("layer", "import", str(base_tar), "base")
    print("   the app layer: made in a workspace over the base, then committed")
    mp = Path(tophan("ws", "create", "build", "-l", "base").strip())
    (mp / "www/index.html").write_text("<h1>hello from a tophan app</h1>\n")
    (mp / "www/health").write_text("ok\n")
    tophan("ws", "unmount", "build")
    tophan("layer", "commit", "build", "app")
    tophan("ws", "rm", "build")
    print("   the config layer: httpd's config, from a directory")
    conf = work / "conf"
    (conf / "etc").mkdir(parents=True)
    (conf / "etc/httpd.conf").write_text("H:/www\n")
    tophan("layer", "create", "config", "--from", str(conf))
    tophan("layer", "list")


def image() -> None:
    print("2. an image of config + app + base: an OCI manifest and config in the store")
    tophan("image", "create", "web", "-l", "config", "-l", "app", "-l", "base",
           "--cmd", '["httpd", "-f", "-p", "8080", "-c", "/etc/httpd.conf"]',
           "--port", "8080/tcp", "--health-cmd", "wget -q -O /dev/null http://127.0.0.1:8080/health",
           "--health-interval", "0.5s")  # fmt: skip
    tophan("image", "list")


def app() -> None:
    limits = ["-m", "32m", "--pids-limit", "64"] if PRIVILEGED else ["--no-limits"]
    print(f"3. an app from it, with {' '.join(limits)}, the image's health check, and its port")
    print("   published from its private network (the default network of apps)")
    tophan("app", "create", "web", *limits, "-p", "8080:8080", "--restart", "on-failure:3",
           "--stop-timeout", "2s", "web")  # fmt: skip
    tophan("app", "start", "web")
    tophan("app", "ps")
    deadline = time.monotonic() + 30
    while json.loads(tophan("app", "ps", "--json", quiet=True))[0]["health"] != "healthy":
        if time.monotonic() > deadline:
            sys.exit("demo failed: the app did not become healthy")
        time.sleep(0.2)
    tophan("app", "ps")
    print("   its supervisor: one small process per app, no daemon")
    state = json.loads(tophan("app", "inspect", "web", quiet=True))[0]["state"]
    title = Path(f"/proc/{state['supervisor']}/cmdline").read_text().replace("\0", " ").strip()
    print(f"    pid {state['supervisor']}: {title}")
    print("   the page, fetched from the host through the published port 127.0.0.1:8080:")
    with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=10) as page:
        print("    " + page.read().decode().strip())
    print("   and inside the app's own network namespace:")
    tophan("app", "exec", "web", "--", "wget", "-qO-", "http://127.0.0.1:8080/")
    tophan("app", "exec", "web", "--", "sh", "-c", "hostname; ps")
    print(
        "   stop: SIGTERM, which httpd as pid 1 ignores: after the 2 s grace the cgroup is killed"
    )
    tophan("app", "stop", "web")
    tophan("app", "ps", "-a")
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if str(STORE) in line]
    print(f"   mounts of the store left: {mounted or 'none'}")
    if mounted:
        sys.exit("demo failed: something is still mounted")


def scan(work: Path) -> None:
    print("4. what is in the image, and what is known against it: an SBOM and a vulnerability")
    print("   scan (inventories per layer, cached by digest) against real OSV records")
    sbom = work / "web.cdx.json"
    tophan("sbom", "web", "-o", str(sbom))
    doc = json.loads(sbom.read_text())
    for c in doc.get("components", []):
        print(f"    component {c.get('purl')}")
    tophan("scan", "web", "--db", str(HERE.parent / "tests/data/osv"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry(work: Path) -> None:
    exe = shutil.which("docker-registry")
    if exe is None:
        print("5. (skipped: docker-registry is not installed)")
        return
    port = free_port()
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    print(f"5. push to a local OCI registry (docker-registry on 127.0.0.1:{port}), signed with a")
    print("   cosign-compatible key; pulled elsewhere under a policy that requires the signature")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_port(port)
        ref = f"127.0.0.1:{port}/demo/web:1.0"
        key = work / "signer"
        # an empty passphrase must be said, as with cosign (COSIGN_PASSWORD=)
        os.environ["TOPHAN_PASSPHRASE"] = ""
        tophan("key", "generate", str(key), "--no-passphrase")
        tophan("push", "--quiet", "web", ref, "--sign-key", f"{key}.key")
        tophan("verify", ref, "--key", f"{key}.pub")
        tophan("push", "--quiet", "web", f"127.0.0.1:{port}/demo/unsigned:1.0")
        policy = work / "policy.json"
        policy.write_text(json.dumps({
            "default": [{"type": "reject"}],
            "transports": {"docker": {f"127.0.0.1:{port}/demo": [{
                "type": "sigstoreSigned", "keyPath": f"{key}.pub",
                "signedIdentity": {"type": "matchRepository"},
            }]}},
        }, indent=1))  # fmt: skip
        tophan("init", str(STORE2), root=STORE2)
        tophan("pull", "--quiet", "--policy", str(policy), ref, "web", root=STORE2)
        tophan("pull", "--quiet", "--policy", str(policy), f"127.0.0.1:{port}/demo/unsigned:1.0",
               "unsigned", root=STORE2, fails=True)  # fmt: skip
        tophan("image", "list", root=STORE2)
        a = json.loads(tophan("image", "inspect", "web", "--json", quiet=True))
        b = json.loads(tophan("image", "inspect", "web", "--json", quiet=True, root=STORE2))
        same = a.get("digest") == b.get("digest")
        print(f"   same manifest digest in both stores: {same}")
        print("   and it runs there:")
        flags = [] if PRIVILEGED else ["--no-limits"]
        tophan("run", *flags, "web", "--", "cat", "/www/index.html", root=STORE2)
        if not same:
            sys.exit("demo failed: the pulled image differs")
    finally:
        proc.terminate()
        proc.wait()
    print("done: nothing left mounted; the stores are", STORE, "and", STORE2)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit("demo failed: the registry did not start")


if __name__ == "__main__":
    main()
