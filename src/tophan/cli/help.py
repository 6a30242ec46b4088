"""Per-command help: what ``tophan CMD [SUB] --help`` prints.

Kept out of cli/main.py so that a command that does not ask for help never loads the text.
Each entry: (arguments after the command, what it does, options, example). ``{prog}`` is the
entry point's name (``tophan`` or ``overlayd``).
"""

from __future__ import annotations

REGISTRY = (
    "--tls-verify=false   skip TLS verification (plain http for loopback registries)\n"
    "--creds USER:PASS    credentials (else the auth file's)\n"
    "--authfile FILE      a docker/podman auth.json\n"
    "--cert-dir DIR       CA certificates (*.crt) trusted for every host\n"
    "--retries N          retries per request on transient failures\n"
    "-j, --jobs N         blobs transferred at once\n"
    "-q, --quiet          no progress bars\n"
    "--json               the report as JSON"
)

HEALTH = (
    "--health-cmd CMD | --health-http URL | --health-tcp HOST:PORT\n"
    "                     the check (--no-healthcheck: none, not even the image's)\n"
    "--health-interval D  --health-timeout D  --health-start-period D  (30s, 1m30s, 500ms)\n"
    "--health-retries N   failures in a row before the app is unhealthy"
)

# "command [sub]" -> (arguments, description, options, example)
ENTRIES: dict[str, tuple[str, str, str, str]] = {
    "init": (
        "[PATH]",
        "Initialize a store at PATH (default: --root's). Safe to re-run; prints the path.",
        "",
        "{prog} init /srv/tophan",
    ),
    "version": ("", "Print the version.", "", "{prog} version"),
    "help": (
        "[COMMAND [SUBCOMMAND]]",
        "Print the overview of all commands, or one command's help.",
        "",
        "{prog} help layer import",
    ),
    "gc": (
        "[--json]",
        "Remove staging leftovers of interrupted commands and layers nothing refers to.",
        "--json   the report as JSON",
        "{prog} gc",
    ),
    "fsck": (
        "[--json]",
        "Check every layer's digest and every reference; exit 1 if anything is wrong.",
        "--json   the report as JSON",
        "{prog} fsck --json",
    ),
    "materialize": (
        "NAME -l TOP [-l LAYER ...] -m PATH",
        "Create a workspace over the layers and mount it at PATH; prints PATH.",
        "-l, --layer L    a lower layer, top first (repeat)\n-m, --mount PATH the mountpoint",
        "{prog} materialize dev -l app -l base -m /mnt/dev",
    ),
    "layer": (
        "<create|list|rm|path|info|commit|import|export|verify|seal> ...",
        "Layers: immutable, content-addressed directory trees, named.",
        "",
        "{prog} layer import rootfs.tar.gz base",
    ),
    "layer create": (
        "NAME [--from DIR]",
        "Create a layer. Without --from it is open: an empty directory of its own (`layer path`)"
        " to fill, sealed into the store by its first use (ws, image, run, export) or"
        " `layer seal`. With --from, a sealed copy of DIR's tree.",
        "--from DIR   the layer's content (DIR itself is left as is)",
        "{prog} layer create base --from ./rootfs",
    ),
    "layer seal": (
        "NAME",
        "Seal an open layer: hash its tree into the store (stored once, whatever its name) and"
        " print its digest. A sealed layer is immutable: verify and fsck report any change.",
        "",
        "{prog} layer seal base",
    ),
    "layer list": (
        "[--all] [--json]",
        "List layers (name, digest, created, size, open|sealed); overlayd: name<TAB>created_at.",
        "-a, --all   unnamed layers too (e.g. of pulled images), with the images using them\n"
        "--json      a JSON array with every field",
        "{prog} layer list --all",
    ),
    "layer rm": (
        "NAME",
        "Remove a layer name; refused while a workspace, image or app uses it.",
        "",
        "{prog} layer rm old",
    ),
    "layer path": (
        "NAME",
        "Print the layer's content directory.",
        "",
        "ls $({prog} layer path base)",
    ),
    "layer info": (
        "NAME [--json]",
        "Print the layer's metadata as key=value lines, including its digest.",
        "--json   as a JSON object",
        "{prog} layer info base",
    ),
    "layer commit": (
        "WORKSPACE NEWLAYER",
        "Turn an unmounted workspace's changes (its upper directory) into a new layer.",
        "",
        "{prog} layer commit dev app-v2",
    ),
    "layer import": (
        "TAR|- NAME",
        "Import a tar (plain, gzip, zstd, xz or bzip2; '-' = stdin) as layer NAME.",
        "",
        "{prog} layer import rootfs.tar.gz base",
    ),
    "layer export": (
        "NAME TAR|- [--compress gzip|zstd]",
        "Write the layer's canonical tar to TAR ('-' = stdout); a failed export leaves nothing.",
        "--compress gzip|zstd   compress the tar",
        "{prog} layer export base base.tar.gz --compress gzip",
    ),
    "layer verify": (
        "[NAME ...] [--json]",
        "Recompute the digests of the named (default: all) layers; exit 1 if any changed.",
        "--json   the results as JSON",
        "{prog} layer verify base",
    ),
    "ws": (
        "<create|list|info|path|upper|mount|unmount|rm> ...",
        "Workspaces: a writable overlay view of layers. `workspace` is an alias of `ws`.",
        "",
        "{prog} ws create dev -l app -l base",
    ),
    "ws create": (
        "NAME -l TOP [-l LAYER ...] [-m PATH] [--no-mount] [--suid-dev]",
        "Create a workspace over the layers (first -l is the top) and mount it, nosuid,nodev;"
        " prints the mountpoint.",
        "-l, --layer L     a lower layer, top first (repeat)\n"
        "-m, --mount PATH  mountpoint (default: inside the store)\n"
        "--no-mount        create it unmounted\n"
        "--suid-dev        let setuid files and device nodes work through the mount (rarely"
        " wanted: anyone who can reach the mountpoint could use them)",
        "{prog} ws create dev -l app -l base",
    ),
    "ws list": (
        "[--json]",
        "List workspaces: name<TAB>mounted|unmounted<TAB>mountpoint<TAB>lowers.",
        "--json   a JSON array",
        "{prog} ws list",
    ),
    "ws info": (
        "NAME [--json]",
        "Print the workspace's metadata as key=value lines.",
        "--json   as a JSON object",
        "{prog} ws info dev",
    ),
    "ws path": ("NAME", "Print the workspace's mountpoint.", "", "cd $({prog} ws path dev)"),
    "ws upper": (
        "NAME",
        "Print the workspace's upper (writable) directory.",
        "",
        "{prog} ws upper dev",
    ),
    "ws mount": ("NAME", "Mount the workspace at its mountpoint.", "", "{prog} ws mount dev"),
    "ws unmount": ("NAME", "Unmount the workspace.", "", "{prog} ws unmount dev"),
    "ws rm": (
        "NAME [-f]",
        "Remove the workspace and its changes; a mounted one only with --force.",
        "-f, --force   unmount it first",
        "{prog} ws rm dev --force",
    ),
    # -- tophan only -------------------------------------------------------------------------
    "push": (
        "NAME [REF] [registry flags] [--chunk-size SIZE] [--no-mount]",
        "Push image NAME to a registry as REF (default: NAME); prints the manifest digest.",
        REGISTRY + "\n--chunk-size SIZE    upload blobs in chunks (e.g. 8M)\n"
        "--no-mount           never cross-mount blobs from other repositories\n"
        "--sign-key KEY       sign the pushed manifest (tophan sign); --passphrase-file F",
        "{prog} push web registry.example.com/team/web:1.0",
    ),
    "key": (
        "generate PREFIX [--passphrase-file F | --no-passphrase]",
        "Key pairs for signing images (cosign's format).",
        "",
        "{prog} key generate signer",
    ),
    "key generate": (
        "PREFIX [--passphrase-file F | --no-passphrase]",
        "Write PREFIX.key (ECDSA P-256, encrypted as cosign does; 0600) and PREFIX.pub.",
        "--passphrase-file F  the passphrase (else $TOPHAN_PASSPHRASE, else asked)\n"
        "--no-passphrase      store the key with an empty passphrase",
        "{prog} key generate signer --passphrase-file pass.txt",
    ),
    "sign": (
        "REF --key KEY [--passphrase-file F] [registry flags]",
        "Sign the image REF names in its registry (a sigstore signature under sha256-H.sig).",
        "--key KEY            the private key (tophan key generate, cosign generate-key-pair)\n"
        "--passphrase-file F  its passphrase (else $TOPHAN_PASSPHRASE, else asked)\n" + REGISTRY,
        "{prog} sign registry.example.com/team/web:1.0 --key signer.key",
    ),
    "verify": (
        "REF|NAME --key PUB [--identity REF] [--offline] [--json] [registry flags]",
        "Check every signature of REF; exit 0 only if one verifies for its digest and repository.\n"
        "NAME, an image in the store (a name without a registry host, or any with --offline):\n"
        "the signatures stored with it, offline.",
        "--key PUB            the public key\n--json               each signature and its result\n"
        "--identity REF       (stored image) the repository signed (default: where it was pulled"
        " from, else its name)\n"
        "--offline            the store's copy of REF and its stored signatures\n" + REGISTRY,
        "{prog} verify registry.example.com/team/web:1.0 --key signer.pub",
    ),
    "build": (
        "[-t NAME[:TAG]]... [-f FILE] [flags] CONTEXT|-",
        "Build an image from a Containerfile (else Dockerfile) in CONTEXT (- : a tar on stdin).",
        "-t, --tag NAME       name the image (repeat for more names)\n"
        "-f, --file FILE      the Containerfile (default CONTEXT/Containerfile, Dockerfile)\n"
        "--build-arg K=V      a build argument (K alone: from the environment)\n"
        "--target STAGE       build up to this stage\n"
        "--no-cache           run every step again (the cache is still filled)\n"
        "--network host|none|private  RUN's network (default host; private: the default\n"
        "                     private network, tophan0, as `run --network private`)\n"
        "--layer STAGE=NAME   keep a stage's own steps as one named layer\n"
        "--timestamp N        every time in the image is N (also $SOURCE_DATE_EPOCH)\n"
        "--platform linux/amd64  the only platform built\n"
        "-q, --quiet          print only the image digest;  --iidfile F  write it to F\n"
        "--tls-verify=false  --cert-dir DIR  --creds U:P  --authfile F   for FROM images\n"
        "                     pulled on demand\n"
        "--scan               scan the image built (the store's database: `db update`)\n"
        "--fail-on SEVERITY   with --scan: exit 1 if a finding is at or above it\n"
        "`build prune`: drop the build cache and the layers only it kept",
        "{prog} build -t web:1.0 .",
    ),
    "sbom": (
        "IMAGE|-l LAYER... [--format cyclonedx|spdx] [-o FILE]",
        "Print the SBOM of an image (or of layers, top first): every package its layers\n"
        "install (dpkg, apk, Python, npm) with its purl and the digest of the layer it came\n"
        "from. CycloneDX 1.6 JSON by default, or SPDX 2.3 JSON. The same image gives the same\n"
        "bytes but for the creation time: $SOURCE_DATE_EPOCH fixes it.",
        "--format F           cyclonedx (default) or spdx\n"
        "-o, --output FILE    write FILE (all or nothing) instead of stdout\n"
        "-l, --layer LAYER    a layer instead of an image (repeat; the first is the top)",
        "{prog} sbom web:1.0 --format spdx -o web.spdx.json",
    ),
    "scan": (
        "IMAGE|-l LAYER...|--all [--db PATH] [--json|--sarif] [--severity S,...]\n"
        "       [--fail-on SEVERITY] [--ignore-file F]",
        "Match the image's packages (dpkg, apk, Python, npm; inventories cached per layer)\n"
        "against OSV records: the store's database (`db update`) or --db. Prints package,\n"
        "installed, fixed in, id, severity and layer. --all re-matches every image in the\n"
        "store and keeps each result (`app ps` shows them). Exit 1 with --fail-on when a\n"
        "finding is at or above that severity.",
        "--db PATH            a directory or zip of OSV records instead of the store's\n"
        '--json               {"vulnerabilities": [{id, aliases, package, version, ...}]}\n'
        "--sarif              SARIF 2.1.0\n"
        "--severity S,...     show only these (UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL)\n"
        "--fail-on SEVERITY   exit 1 if anything shown is at or above it\n"
        "--ignore-file F      ids to leave out, one a line (# comments, exp:YYYY-MM-DD)\n"
        "-l, --layer LAYER    a layer instead of an image (repeat; the first is the top)",
        "{prog} scan web:1.0 --fail-on HIGH",
    ),
    "db": (
        "<update|status> ...",
        "The vulnerability database `scan` uses: osv.dev's per-ecosystem exports.",
        "",
        "{prog} db update && {prog} scan --all",
    ),
    "db update": (
        "[--ecosystems E,...] [--url BASE]",
        "Download osv.dev's exports (BASE/ECOSYSTEM/all.zip; resumable), verify them, swap\n"
        "them into the store and index them.",
        "--ecosystems E,...   default Debian,Ubuntu,Alpine,PyPI,npm\n"
        "--url BASE           default $TOPHAN_OSV_URL, else osv.dev's bucket (https only)",
        "{prog} db update --ecosystems Debian,PyPI",
    ),
    "db status": (
        "[--json]",
        "Show the database's ecosystems, record counts and age.",
        "--json   the report as JSON",
        "{prog} db status",
    ),
    "build prune": (
        "",
        "Drop the build cache, then remove the layers only it kept.",
        "",
        "{prog} build prune",
    ),
    "pull": (
        "REF [NAME] [registry flags] [--platform OS/ARCH] [--policy FILE]",
        "Pull an image from a registry and name it NAME (default: REF); prints the name.",
        REGISTRY + "\n--platform OS/ARCH   the platform to pick from an index\n"
        "--policy FILE        containers-policy.json(5) to enforce (else $TOPHAN_POLICY,\n"
        "                     the store's policy.json, /etc/containers/policy.json)",
        "{prog} pull docker.io/library/busybox:latest busybox",
    ),
    "image": (
        "<create|list|inspect|rm|tag|sign|import|export|tags|referrers> ...",
        "OCI images made of layers; archives, layouts and registries.",
        "",
        "{prog} image create web -l app --from base-img --cmd 'httpd -f'",
    ),
    "image create": (
        "NAME -l LAYER [-l LAYER ...] [--from IMAGE] [config flags]",
        "A new image: --from's layers, then the -l layers (the first -l is the top).",
        "-l, --layer L        a layer, top first (repeat)\n"
        "--from IMAGE         start from this image's layers and config\n"
        "--cmd CMD  --entrypoint CMD   a JSON array or a shell-quoted string\n"
        "-e, --env K=V  --workdir DIR  --user U  --port 80/tcp  --volume /data\n"
        "--label K=V  --annotation K=V  --stop-signal SIG  --platform OS/ARCH\n"
        + HEALTH.replace(" | --health-http URL | --health-tcp HOST:PORT", "")
        + "\n--compress gzip|zstd|none   layer blobs' compression (default gzip)\n"
        "--replace            replace an existing image of that name\n"
        "--json               a summary as JSON",
        "{prog} image create web -l app --from base-img --cmd 'httpd -f -p 80'",
    ),
    "image list": (
        "[--json]",
        "List images: name, digest, created, size.",
        "--json   a JSON array",
        "{prog} image list",
    ),
    "image inspect": (
        "NAME [--json]",
        "Print the image's manifest, config and layers as JSON.",
        "--json   (the output is always JSON)",
        "{prog} image inspect web",
    ),
    "image rm": (
        "NAME [NAME ...]",
        "Remove image names; blobs and layers nothing else uses go too.",
        "",
        "{prog} image rm web old-web",
    ),
    "image tag": ("NAME NEW", "Give the image another name.", "", "{prog} image tag web web:1.0"),
    "image sign": (
        "NAME --key KEY [--identity REF] [--passphrase-file F] [--json]",
        "Sign an image in the store: a cosign signature kept with it (push, pull and OCI\n"
        "layout export/import carry it; `verify NAME` checks it offline).",
        "--key KEY            the private key (`key generate`, cosign's)\n"
        "--identity REF       the docker reference signed (default: the name, e.g."
        " docker.io/library/web)\n--passphrase-file F  the key's passphrase",
        "{prog} image sign web --key signer.key --identity registry.example.com/team/web",
    ),
    "image import": (
        "SRC [NAME] [--format oci|oci-archive|docker-archive] [--ref REF] [--platform OS/ARCH]",
        "Import images from an OCI layout, an OCI archive or a docker archive ('-' = stdin);\n"
        "SRC may name its transport: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE.",
        "--format F           the source's format (default: detected)\n"
        "--ref REF            which image of the source\n"
        "--platform OS/ARCH   which platform of an index\n"
        "--compress gzip|zstd|none   compression of stored layer blobs\n"
        "-q, --quiet  --json",
        "{prog} image import busybox.tar busybox",
    ),
    "image export": (
        "NAME [NAME ...] DEST [--format oci|oci-archive|docker-archive]",
        "Write images to DEST (a directory for oci, a file or '-' for archives).",
        "--format F   the format (default: from DEST)",
        "{prog} image export web web.tar --format docker-archive",
    ),
    "image tags": (
        "REF [registry flags] [--json]",
        "List the tags of a remote repository.",
        REGISTRY,
        "{prog} image tags docker.io/library/busybox",
    ),
    "image referrers": (
        "REF [--artifact-type T] [registry flags] [--json]",
        "List the artifacts (signatures, SBOMs...) that refer to a remote image.",
        "--artifact-type T    only this artifact type\n" + REGISTRY,
        "{prog} image referrers registry.example.com/web:1.0",
    ),
    "app": (
        "<create|start|stop|restart|rm|ps|logs|exec|inspect> ...",
        "Supervised apps: one `tophand NAME` process each restarts and health-checks the app.",
        "",
        "{prog} app create web --restart always web-img && {prog} app start web",
    ),
    "app create": (
        "NAME [--file SPEC.toml] [run options] [IMAGE | -l TOP -l ...] [-- CMD ARG...]",
        "Create an app (not started). Takes `{prog} run`'s options, plus the ones below; "
        "flags\noverride the file's keys.",
        "-f, --file SPEC.toml    the app's spec\n"
        "--restart no|on-failure[:N]|always\n"
        "--stop-signal SIG  --stop-timeout D\n" + HEALTH + "\n"
        "--log-opt max-size=SIZE  --log-opt max-file=N",
        "{prog} app create web --restart always -v data:/data web-img",
    ),
    "app start": (
        "[--verify-again] [--scan-policy SEV] NAME [NAME ...]",
        "Start each app's supervisor (tophand NAME) and the app. Under a policy (docs/trust.md)"
        " the app's image must satisfy it as its pull recorded.",
        "--verify-again       check the image's signatures in its registry now (and record it)\n"
        "--scan-policy SEV    refuse an image with vulnerabilities at or above SEV (its last\n"
        "                     scan; also scan.fail_on in the store's config.toml), but for\n"
        "                     the ids the app's scan_allow lists",
        "{prog} app start web",
    ),
    "app stop": (
        "[-t D] NAME [NAME ...]",
        "Send the stop signal, wait the grace period, then kill the app's whole cgroup.",
        "-t, --time D   the grace period (default: the app's --stop-timeout)",
        "{prog} app stop -t 30s web",
    ),
    "app restart": (
        "[-t D] NAME [NAME ...]",
        "Stop, then start each app.",
        "-t, --time D   the stop's grace period",
        "{prog} app restart web",
    ),
    "app rm": (
        "[-f] NAME [NAME ...]",
        "Remove apps; a running one only with --force (stopped first).",
        "-f, --force   stop it first",
        "{prog} app rm -f web",
    ),
    "app ps": (
        "[-a] [--json]",
        "Running apps (-a: all) with status, health, pid, restarts, uptime and stack.",
        "-a, --all   stopped apps too\n--json      a JSON array",
        "{prog} app ps -a",
    ),
    "app logs": (
        "[-f] [--tail N] NAME",
        "Print the app's output (stdout and stderr, rotated files included).",
        "-f, --follow      keep printing until the app stops\n-n, --tail N|all  the last N lines",
        "{prog} app logs -f --tail 20 web",
    ),
    "app exec": (
        "[-i] [-t] [-e K=V] [-u USER] [-w DIR] NAME [--] CMD [ARG...]",
        "Run CMD inside the running app (its namespaces, cgroup and root), in a session of its"
        " own: the caller's terminal never goes in.",
        "-i, --interactive   pass stdin (else /dev/null)\n"
        "-t, --tty           a terminal of its own (TERM=xterm), proxied to yours\n"
        "-e, --env K=V   -u, --user USER[:GROUP]   -w, --workdir DIR",
        "{prog} app exec web -- cat /etc/hostname",
    ),
    "app inspect": (
        "NAME [NAME ...]",
        "Print the apps' spec and state as JSON.",
        "",
        "{prog} app inspect web",
    ),
    "volume": (
        "<create|ls|rm|inspect> ...",
        "Named volumes in the store, mounted with `-v NAME:/path`.",
        "",
        "{prog} volume create data",
    ),
    "volume create": ("NAME", "Create a volume.", "", "{prog} volume create data"),
    "volume ls": (
        "[--json]",
        "List volumes: name<TAB>mountpoint.",
        "--json   a JSON array",
        "{prog} volume ls",
    ),
    "volume rm": (
        "NAME [NAME ...]",
        "Remove volumes (refused while a container or app uses one).",
        "",
        "{prog} volume rm data",
    ),
    "volume inspect": (
        "NAME [NAME ...]",
        "Print the volumes as JSON.",
        "",
        "{prog} volume inspect data",
    ),
    "network": (
        "<create|ls|rm|inspect> ...",
        "Private networks: a bridge and IPv4/IPv6 subnets; containers join one with"
        " `--network NAME` (`--network private`: the default network, tophan).",
        "",
        "{prog} network create backend",
    ),
    "network create": (
        "[--subnet CIDR]... NAME",
        "Create a network (bridge tph-NAME); subnets may not overlap another network's.",
        "--subnet CIDR   an IPv4 and/or an IPv6 subnet (default: the next free 10.89.N.0/24\n"
        "                and fd7e:7068:6e00:N::/64)",
        "{prog} network create --subnet 10.90.0.0/24 backend",
    ),
    "network ls": (
        "[--json]",
        "List networks: name<TAB>bridge<TAB>subnets.",
        "--json   a JSON array",
        "{prog} network ls",
    ),
    "network rm": (
        "NAME [NAME ...]",
        "Remove networks (refused while a container is on one), their bridges and rules.",
        "",
        "{prog} network rm backend",
    ),
    "network inspect": (
        "NAME [NAME ...]",
        "Print the networks and the containers on them as JSON.",
        "",
        "{prog} network inspect tophan",
    ),
}

# Names a command is also known by -> the name its help is under.
ALIASES = {"layer ls": "layer list", "ws ls": "ws list", "ws umount": "ws unmount"}
ALIASES.update({"image ls": "image list", "app ls": "app ps", "app list": "app ps"})
ALIASES.update({"volume list": "volume ls", "workspace": "ws", "network list": "network ls"})


def text(prog: str, command: str) -> str | None:
    """The help of ``command`` ("layer create", "push", ...), or None if it has none."""
    group, _, sub = command.partition(" ")
    command = ALIASES.get(group, group) + (f" {sub}" if sub else "")
    command = ALIASES.get(command, command)
    if command == "run":
        from tophan.cli.run import RUN_USAGE

        example = "\nexample:\n  {p} run --rm -m 64m -v data:/data busybox -- sh -c 'df /data'\n"
        return RUN_USAGE.replace("tophan", prog) + example.format(p=prog)
    entry = ENTRIES.get(command)
    if entry is None:
        return None
    args, what, options, example = entry
    out = [f"usage: {prog} {command}{' ' + args if args else ''}", "", what.format(prog=prog)]
    subs = [(k.partition(" ")[2], v[1]) for k, v in ENTRIES.items() if k.startswith(command + " ")]
    if subs:
        out += ["", "commands:"]
        out += [f"  {sub:<10} {desc.splitlines()[0].format(prog=prog)}" for sub, desc in subs]
    out += ["", "options:"]
    out += [f"  {line}" for line in options.splitlines() if line]
    out += ["  -h, --help           this help", "", "example:", f"  {example.format(prog=prog)}"]
    return "\n".join(out) + "\n"
