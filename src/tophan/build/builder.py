"""``tophan build``: a Containerfile's stages built into an image, step by step, cached.

Each stage starts from its ``FROM`` (an earlier stage, ``scratch``, an image of the store, or one
pulled on demand) and carries a stack of layers, an image config and a history. ``RUN`` runs
through tophan's own runtime on the stage's stack and commits the writable layer's diff;
``COPY``/``ADD`` write their files as a tar stream (:mod:`tophan.build.copy`) extracted into a
new layer; ``WORKDIR`` makes its directory when the stack lacks it; every other instruction
changes only the config. Every step has a cache key (:mod:`tophan.build.cache`): an equal key
reuses the step's layer and creation time, so a fully cached rebuild gives the same image digest.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import cast

from tophan.build import cache as cache_mod
from tophan.build import containerfile as cf
from tophan.errors import TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import IO, Any, BinaryIO

    from tophan._internal.fs import Staging
    from tophan._internal.root import StoreRoot
    from tophan.build.tree import Tree
    from tophan.image.images import Image, ImageConfig, LayerInfo
    from tophan.image.registry import Options
    from tophan.image.spec import Platform

# The platform args BuildKit and buildah predefine (usable after ``ARG TARGETARCH`` etc.).
_PLATFORM_ARGS = {
    "TARGETPLATFORM": "linux/amd64",
    "TARGETOS": "linux",
    "TARGETARCH": "amd64",
    "TARGETVARIANT": "",
    "BUILDPLATFORM": "linux/amd64",
    "BUILDOS": "linux",
    "BUILDARCH": "amd64",
    "BUILDVARIANT": "",
}
_CONFIG_ONLY = {
    "ENV", "LABEL", "USER", "EXPOSE", "VOLUME", "STOPSIGNAL", "CMD", "ENTRYPOINT", "SHELL",
    "HEALTHCHECK", "MAINTAINER", "ARG",
}  # fmt: skip
_NETWORKS = ("host", "none", "private")


class BuildError(TophanError):
    """A build step failed; ``rc`` is a failing RUN's exit code."""


class BuildOptions:
    """What ``tophan build`` takes (the CLI's flags, typed)."""

    def __init__(
        self,
        context: str,
        *,
        file: str | None = None,  # default: CONTEXT/Containerfile, else CONTEXT/Dockerfile
        tags: list[str] | None = None,
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        network: str = "host",
        layers: Mapping[str, str] | None = None,  # stage -> layer name (--layer STAGE=NAME)
        timestamp: int | None = None,  # every created time and file mtime (reproducible)
        platform: str | None = None,
        registry: Options | None = None,  # for FROM images pulled on demand
    ) -> None:
        self.context = context
        self.file = file
        self.tags = list(tags or [])
        self.build_args = dict(build_args or {})
        self.target = target
        self.no_cache = no_cache
        self.network = network
        self.layers = dict(layers or {})
        self.timestamp = timestamp
        self.platform = platform
        self.registry = registry


class Output:
    """Where a build reports: step lines, notes, and the fds RUN commands write to."""

    def __init__(self, stdout: int = 1, stderr: int = 2, quiet: bool = False) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.quiet = quiet

    def line(self, text: str) -> None:
        if not self.quiet:
            os.write(self.stdout, (text + "\n").encode("utf-8", "surrogateescape"))

    def warn(self, text: str) -> None:
        os.write(self.stderr, (f"warning: {text}\n").encode("utf-8", "surrogateescape"))


class BuildResult:
    def __init__(self, image: Image, steps: int, cached: int, layers: dict[str, str]) -> None:
        self.image = image
        self.steps = steps
        self.cached = cached
        self.layers = layers  # --layer: stage -> layer digest

    @property
    def digest(self) -> str:
        return self.image.digest


class _State:
    """A stage as built so far."""

    def __init__(self, stage: cf.Stage) -> None:
        from tophan.image.images import ImageConfig
        from tophan.image.spec import Platform

        self.stage = stage
        self.stack: list[LayerInfo | str] = []  # bottom -> top
        self.config: ImageConfig = ImageConfig()
        self.history: list[dict[str, Any]] = []
        self.args: dict[str, str] = {}  # ARGs declared in the stage, with their values
        self.key = ""
        self.base_count = 0  # layers that came with FROM
        self.platform: Platform = Platform.parse("linux/amd64")
        self.created = ""
        self.cmd_set = False  # CMD given in this stage (else ENTRYPOINT resets the base's)
        self.author: str | None = None  # the config's "author": the base's, or MAINTAINER's

    def digests(self) -> list[str]:
        return [x if isinstance(x, str) else x.digest for x in self.stack]

    def env(self) -> dict[str, str]:
        """What substitution sees: ENV wins over an ARG of the same name (Docker's rule)."""
        return {**self.args, **self.config.env_dict()}


def find_containerfile(context: str, file: str | None) -> str:
    if file is not None:
        if not os.path.isfile(file):
            raise UsageError(f"no such Containerfile: {file}", "check -f")
        return file
    for name in ("Containerfile", "Dockerfile"):
        path = os.path.join(context, name)
        if os.path.isfile(path):
            return path
    raise UsageError(
        f"no Containerfile or Dockerfile in {context}", "add one, or name it with -f FILE"
    )


class Builder:
    def __init__(self, store: StoreRoot, opts: BuildOptions, out: Output | None = None) -> None:
        self.store = store
        self.opts = opts
        self.out = out or Output()
        self.states: dict[int, _State] = {}
        self.step = 0
        self.total = 0
        self.cached = 0
        self.used_args: set[str] = set()
        self.layer_digests: dict[str, str] = {}
        self.work: Staging | None = None
        self._n = 0
        # Rootless with subordinate ids: RUN's containers have several users, whose files only
        # a namespace with the same map can commit (_commit_upper).
        self.mapped = False

    # -- the whole build -----------------------------------------------------------------------

    def _check_rootless(self) -> None:
        if self.store.privileged:
            return
        from tophan._internal import userns

        self.mapped = os.geteuid() != 0 and userns.has_subordinate_ids()
        if not self.mapped and os.geteuid() != 0:
            self.out.warn(
                "rootless without subordinate ids: RUN steps have root only (no other user"
                " or group: apt-get, useradd, chown to another id fail); add a range for you"
                " to /etc/subuid and /etc/subgid (Debian's uidmap package maps it)"
            )

    def build(self) -> BuildResult:
        from tophan.build.ignore import Ignore

        opts = self.opts
        if opts.network not in _NETWORKS:
            raise UsageError(
                f"unknown network {opts.network!r}", "use --network host, none or private"
            )
        if opts.platform not in (None, "linux/amd64"):
            raise UsageError(f"cannot build for {opts.platform}", "only linux/amd64 is supported")
        if not os.path.isdir(opts.context):
            raise UsageError(f"build context {opts.context} is not a directory")
        self._check_rootless()
        path = find_containerfile(opts.context, opts.file)
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            self.file = cf.parse(f.read(), os.path.basename(path))
        self.ignore = Ignore.load(opts.context, path)
        self.meta = self._meta_args()
        order = self._plan()
        self._check_layer_flags(order)
        self.total = sum(1 + len(s.instructions) for s in order)
        self.work = self.store.staging("build")
        try:
            for stage in order:
                self._build_stage(stage)
            final = self.states[order[-1].index]
            image = self._commit(final)
        finally:
            self.work.discard()
        unused = sorted(set(opts.build_args) - self.used_args)
        if unused:
            self.out.warn(f"build args not consumed by any stage: {', '.join(unused)}")
        return BuildResult(image, self.step, self.cached, self.layer_digests)

    def _meta_args(self) -> dict[str, str]:
        """The ARGs before the first FROM, with --build-arg values (visible to FROM lines)."""
        values = dict(_PLATFORM_ARGS)
        for inst in self.file.meta_args:
            for name, default in cf.key_values(inst, values, self.file.escape):
                if name in self.opts.build_args:
                    values[name] = self.opts.build_args[name]
                    self.used_args.add(name)
                elif default is not None:
                    values[name] = default
                else:
                    values.setdefault(name, "")
        return values

    def _plan(self) -> list[cf.Stage]:
        """The stages to build, dependencies first; stages nothing needs are skipped."""
        stages = self.file.stages
        if self.opts.target is not None:
            target = self.file.stage(self.opts.target)
            if target is None:
                raise UsageError(
                    f"no stage named {self.opts.target!r} in {self.file.path}", "check --target"
                )
        else:
            target = stages[-1]
        order: list[cf.Stage] = []
        visiting: set[int] = set()

        def visit(stage: cf.Stage) -> None:
            if stage in order:
                return
            if stage.index in visiting:
                raise UsageError(f"{stage.source.where()}: stages depend on each other in a circle")
            visiting.add(stage.index)
            for dep in self._deps(stage):
                visit(dep)
            visiting.discard(stage.index)
            order.append(stage)

        visit(target)
        return order

    def _deps(self, stage: cf.Stage) -> list[cf.Stage]:
        out = []
        base = self._stage_ref(cf.expand(stage.base, self.meta, self.file.escape), stage.index)
        if base is not None:
            out.append(base)
        for inst in stage.instructions:
            src = inst.flag("from") if inst.keyword == "COPY" else None
            if src is not None:
                dep = self._stage_ref(cf.expand(src, self.meta, self.file.escape), stage.index)
                if dep is not None:
                    out.append(dep)
        return out

    def _stage_ref(self, ref: str, before: int) -> cf.Stage | None:
        """An earlier stage named ``ref`` (or numbered, for COPY --from)."""
        for s in self.file.stages[:before]:
            if s.name is not None and s.name == ref.lower():
                return s
        if ref.isdigit() and int(ref) < before:
            return self.file.stages[int(ref)]
        return None

    def _check_layer_flags(self, order: list[cf.Stage]) -> None:
        from tophan._internal import names

        built = {s.name for s in order if s.name} | {str(s.index) for s in order}
        for stage, name in self.opts.layers.items():
            if stage.lower() not in built:
                raise UsageError(
                    f"--layer {stage}={name}: no stage {stage!r} is built",
                    "name a stage of the target's chain",
                )
            names.check(name, "layer")

    # -- one stage -----------------------------------------------------------------------------

    def _build_stage(self, stage: cf.Stage) -> None:
        st = _State(stage)
        self._from(st)
        for inst in stage.instructions:
            self._instruction(st, inst)
        layer_name = self._layer_name(stage)
        if layer_name is not None:
            self._keep_layer(st, layer_name)
        self.states[stage.index] = st

    def _layer_name(self, stage: cf.Stage) -> str | None:
        for key, name in self.opts.layers.items():
            if key.lower() == stage.name or key == str(stage.index):
                return name
        return None

    def _announce(self, inst: cf.Instruction) -> None:
        self.step += 1
        self.out.line(f"STEP {self.step}/{self.total}: {inst.text()}")

    def _from(self, st: _State) -> None:
        stage = st.stage
        self._announce(stage.source)
        if stage.platform is not None:
            plat = cf.expand(stage.platform, self.meta, self.file.escape)
            if plat not in ("linux/amd64", "linux/x86_64"):
                raise UsageError(
                    f"{stage.source.where()}: cannot build for platform {plat}",
                    "only linux/amd64 is supported",
                )
        base = cf.expand(stage.base, self.meta, self.file.escape, where=stage.source.where())
        parent = self._stage_ref(base, stage.index)
        if parent is not None:
            prev = self.states[parent.index]
            st.stack = list(prev.stack)
            st.config = prev.config
            st.history = list(prev.history)
            st.author = prev.author
            st.key = cache_mod.key("from-stage", prev.key)
            st.created = prev.created
        elif base.lower() == "scratch":
            st.key = cache_mod.key("scratch")
        else:
            image = self._image(base, stage.source)
            st.stack = list(image.layer_infos)
            st.config = image.config
            history = image.raw_config.get("history")
            st.history = list(history) if isinstance(history, list) else []
            author = image.raw_config.get("author")
            st.author = author if isinstance(author, str) else None
            st.key = cache_mod.key("from", image.digest)
            st.created = image.created
            self._hold_all(st.digests())
        st.base_count = len(st.stack)
        if "PATH" not in st.config.env_dict():
            # Docker's rule (BuildKit and the classic builder): an image always has a PATH
            from tophan.run.container import DEFAULT_PATH

            st.config = st.config.with_env([f"PATH={DEFAULT_PATH}"])

    def _image(self, ref: str, inst: cf.Instruction) -> Image:
        """An image of the store, else pulled from its registry (as docker build does)."""
        from tophan.image import registry
        from tophan.image.images import Images
        from tophan.image.spec import normalize_name

        images = Images(self.store)
        try:
            name = normalize_name(ref)
        except TophanError as e:
            raise UsageError(f"{inst.where()}: {e.message}", e.hint) from e
        if images.exists(name):
            return images.get(name)
        self.out.line(f"pulling {ref}")
        try:
            registry.pull(self.store, ref, name, options=self.opts.registry)
        except TophanError as e:
            raise TophanError(
                f"{inst.where()}: image {ref} is not in the store and cannot be pulled: "
                f"{e.message}",
                e.hint or f"pull or import it first (`tophan pull {ref}`)",
            ) from e
        return images.get(name)

    def _hold_all(self, digests: list[str]) -> None:
        c = self._cache()
        with self.store.lock():
            for d in digests:
                c.hold(d)

    def _cache(self) -> cache_mod.Cache:
        return cache_mod.Cache(self.store, self.work)

    # -- instructions --------------------------------------------------------------------------

    def _instruction(self, st: _State, inst: cf.Instruction) -> None:
        self._announce(inst)
        kw = inst.keyword
        if kw == "ARG":
            self._arg(st, inst)
        elif kw in _CONFIG_ONLY:
            self._config_step(st, inst)
        elif kw == "RUN":
            self._run(st, inst)
        elif kw in ("COPY", "ADD"):
            self._copy(st, inst)
        elif kw == "WORKDIR":
            self._workdir(st, inst)
        else:  # the parser refuses what we do not know; this is a bug if reached
            raise UsageError(f"{inst.where()}: {kw} is not supported")

    def _arg(self, st: _State, inst: cf.Instruction) -> None:
        env = st.env()
        for name, default in cf.key_values(inst, env, self.file.escape):
            if name in self.opts.build_args:
                value = self.opts.build_args[name]
                self.used_args.add(name)
            elif default is not None:
                value = default
            else:
                value = self.meta.get(name, "")
            st.args[name] = value
        self._metadata_step(st, inst, inst.text(), changes_config=False)

    def _config_step(self, st: _State, inst: cf.Instruction) -> None:
        from dataclasses import replace

        from tophan.build import instructions

        if inst.keyword == "MAINTAINER":
            # Docker (BuildKit) and buildah: the image config's author, not a label
            st.author = inst.rest
        st.config, text = instructions.apply(st.config, inst, st.env(), self.file.escape)
        if inst.keyword == "CMD":
            st.cmd_set = True
        elif inst.keyword == "ENTRYPOINT" and not st.cmd_set:
            # Docker's rule: a new ENTRYPOINT drops the CMD the stage did not set itself
            st.config = replace(st.config, cmd=None)
        self._metadata_step(st, inst, text)

    def _metadata_step(
        self, st: _State, inst: cf.Instruction, text: str, *, changes_config: bool = True
    ) -> None:
        """A step without a layer: cached only for its creation time (so a rebuild's config,
        hence its digest, is the same)."""
        st.key = cache_mod.key(st.key, text, self._args_seen(st))
        created = self._created(st.key)
        if changes_config:
            st.history.append(
                {"created": created, "created_by": f"/bin/sh -c #(nop) {text}", "empty_layer": True}
            )
            st.created = created

    def _created(self, key: str) -> str:
        """A metadata step's creation time: the cached one, else now (recorded)."""
        c = self._cache()
        if not self.opts.no_cache:
            entry = c.get(key)
            if entry is not None and entry.layer is None:
                return entry.created
        created = self._now()
        with self.store.lock():
            c.put(key, None, created)
        return created

    def _now(self) -> str:
        from tophan.image.images import now_rfc3339, rfc3339

        if self.opts.timestamp is not None:
            return rfc3339(self.opts.timestamp)
        return now_rfc3339()

    def _args_seen(self, st: _State) -> str:
        return "\n".join(f"{k}={v}" for k, v in sorted(st.args.items()))

    def _layer_step(
        self,
        st: _State,
        inst: cf.Instruction,
        key: str,
        created_by: str,
        make: Callable[[], tuple[str | None, str]],
    ) -> None:
        """A step that may add a layer: from the cache, else ``make()`` (layer, created)."""
        st.key = key
        entry = None if self.opts.no_cache else self._cache().get(key)
        if entry is not None:
            self.cached += 1
            self.out.line(f"--> Using cache {entry.layer or '(no change)'}")
            layer, created = entry.layer, entry.created
        else:
            layer, created = make()
        record: dict[str, Any] = {"created": created, "created_by": created_by}
        if layer is None:
            record["empty_layer"] = True
        else:
            st.stack.append(layer)
            self.out.line(f"--> {layer}")
        st.history.append(record)
        st.created = created

    # -- RUN -----------------------------------------------------------------------------------

    def _run(self, st: _State, inst: cf.Instruction) -> None:
        from tophan.build import instructions

        argv = cf.shell_or_exec(inst, instructions.shell_of(st.config))
        key = cache_mod.key(st.key, "RUN", json.dumps(argv), self._args_seen(st))
        self._layer_step(
            st, inst, key, " ".join(argv), lambda: self._run_container(st, inst, argv, key)
        )

    def _run_container(
        self, st: _State, inst: cf.Instruction, argv: list[str], key: str
    ) -> tuple[str | None, str]:
        from tophan.layer.layers import Layers
        from tophan.run import container as runtime
        from tophan.run import security

        assert self.work is not None
        layers = Layers(self.store)
        digests = st.digests()
        lowers = [layers.tree_path(d) for d in reversed(digests)]
        if not lowers:
            raise UsageError(
                f"{inst.where()}: RUN needs a root filesystem", "FROM scratch has no shell"
            )
        spec = runtime.Spec(lowers, argv)
        spec.digests = digests
        spec.env = st.env()  # (a PATH is always there: _from sets Docker's default)
        spec.workdir = st.config.working_dir or "/"
        spec.user = st.config.user or None
        spec.hostname = "tophan-build"
        spec.network = self.opts.network
        spec.caps = security.resolve_caps([], [])
        spec.no_limits = not self.store.privileged
        stdio = self._stdio()
        ctr = runtime.start(self.store, spec, stdio=stdio)
        upper = self._path("upper")
        try:
            rc = ctr.wait()
            if rc == 0:
                ctr.close(keep_upper=upper)
        finally:
            if not os.path.isdir(upper):  # failed or interrupted: nothing kept
                ctr.close()
            for fd in set(stdio) - {0, 1, 2, self.out.stdout, self.out.stderr}:
                os.close(fd)
        if rc != 0:
            err = BuildError(
                f"{inst.where()}: RUN failed with exit code {rc}: {_short(inst.text())}",
                "the finished steps are cached; fix the command and build again",
            )
            err.rc = rc
            raise err
        return self._commit_upper(upper, lowers, key)

    def _stdio(self) -> tuple[int, int, int]:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if self.out.quiet:
            return (null, os.dup(null), os.dup(null))
        return (null, self.out.stdout, self.out.stderr)

    def _path(self, kind: str) -> str:
        assert self.work is not None
        self._n += 1
        return os.path.join(self.work.path, f"{kind}-{self._n}")

    def _mkdir(self, kind: str) -> str:
        path = self._path(kind)
        os.mkdir(path, 0o700)
        return path

    def _commit_upper(self, upper: str, lowers: list[str], key: str) -> tuple[str | None, str]:
        from tophan.layer import commit

        def diff(tree: str) -> tuple[str, int]:
            return commit.diff_upper(
                upper, lowers, tree, xattr_ns=self.store.xattr_ns, privileged=self.store.privileged
            )

        def fill(tree: str) -> tuple[str, int] | None:
            if self.mapped:
                from tophan._internal import userns

                # The upper dir holds files of the container's other users (our subordinate
                # ids): readable, with the owners the container saw, only as root of a
                # namespace that maps them as the container's did.
                known = userns.call_mapped(diff, tree)
            else:
                known = diff(tree)
            if self.opts.timestamp is None:
                return known
            clamp_times(tree, self.opts.timestamp)
            return None

        return self._publish(fill, key)

    def _publish(
        self, fill: Callable[[str], tuple[str, int] | None], key: str
    ) -> tuple[str | None, str]:
        """A new layer from ``fill``, recorded in the cache under ``key`` as it is published
        (an empty diff is recorded as "no layer")."""
        from tophan.layer.layers import Layers

        created = self._now()
        c = self._cache()
        empty = False

        def filled(tree: str) -> tuple[str, int] | None:
            nonlocal empty
            result = fill(tree)
            empty = not os.listdir(tree)
            return result

        def keep(digest: str) -> None:
            c.put(key, None if empty else digest, created)

        digest = Layers(self.store).build_tree(filled, keep)
        return (None if empty else digest), created

    # -- COPY, ADD, WORKDIR --------------------------------------------------------------------

    def _copy(self, st: _State, inst: cf.Instruction) -> None:
        from tophan.build import copy

        env = st.env()
        if inst.heredocs:
            raise UsageError(
                f"{inst.where()}: {inst.keyword} <<EOF is not supported yet",
                "put the file in the context, or write it with RUN <<EOF",
            )
        words = [
            cf.expand(w, env, self.file.escape, where=inst.where()) for w in cf.arguments(inst)
        ]
        if len(words) < 2:
            raise UsageError(f"{inst.where()}: {inst.keyword} needs a source and a destination")
        srcs, dest = words[:-1], words[-1]
        for src in srcs:
            if inst.keyword == "ADD" and cf.is_git_url(src):
                raise UsageError(
                    f"{inst.where()}: ADD of a git repository ({src}) is not supported",
                    "clone it into the context and COPY it",
                )
        source = self._copy_source(st, inst)
        flags = {n: cf.expand(inst.flag(n) or "", env) for n in ("chown", "chmod", "checksum")}
        with copy.plan(
            srcs,
            dest,
            source=source,
            target=self._tree(st.digests()),
            workdir=st.config.working_dir or "/",
            chown=flags["chown"] or None,
            chmod=flags["chmod"] or None,
            add=inst.keyword == "ADD",
            checksum=flags["checksum"] or None,
            where=inst.where(),
            staging_dir=self._mkdir("copy"),
        ) as plan:
            text = f"{inst.keyword} {_flags_text(flags)}{json.dumps(words)}"
            key = cache_mod.key(st.key, text, plan.digest)
            created_by = f"/bin/sh -c #(nop) {inst.keyword} {plan.digest} in {dest}"

            def write(out: IO[bytes]) -> None:
                plan.write(cast("BinaryIO", out), mtime=self.opts.timestamp)

            self._layer_step(st, inst, key, created_by, lambda: self._layer_from_tar(write, key))

    def _copy_source(self, st: _State, inst: cf.Instruction) -> Any:
        from tophan.build.copy import CopySource
        from tophan.build.tree import Tree

        ref = inst.flag("from")
        if ref is None:
            return CopySource(Tree([self.opts.context], xattr_ns=None), self.ignore, True)
        ref = cf.expand(ref, self.meta, self.file.escape)
        stage = self._stage_ref(ref, st.stage.index)
        if stage is not None:
            digests = self.states[stage.index].digests()
        else:
            image = self._image(ref, inst)
            digests = image.layers
            self._hold_all(digests)
        return CopySource(self._tree(digests), None, False)

    def _tree(self, digests: list[str]) -> Tree:
        from tophan.build.tree import Tree
        from tophan.layer.layers import Layers

        layers = Layers(self.store)
        trees = [layers.tree_path(d) for d in reversed(digests)]
        return Tree(trees, xattr_ns=self.store.xattr_ns)

    def _layer_from_tar(
        self, write: Callable[[IO[bytes]], None], key: str
    ) -> tuple[str | None, str]:
        from tophan._internal.fs import through_pipe
        from tophan.layer import tarimport

        def fill(tree: str) -> tuple[str, int]:
            stats = through_pipe(
                write,
                lambda src: tarimport.extract(
                    src, tree, xattr_ns=self.store.xattr_ns, privileged=self.store.privileged
                ),
            )
            return stats.digest, stats.size

        return self._publish(fill, key)

    def _workdir(self, st: _State, inst: cf.Instruction) -> None:
        from dataclasses import replace

        from tophan.build import instructions

        env = st.env()
        path = instructions.workdir(st.config.working_dir, inst, env, self.file.escape)
        st.config = replace(st.config, working_dir=path)
        tree = self._tree(st.digests())
        resolved = tree.resolve(path)
        key = cache_mod.key(st.key, f"WORKDIR {path}")
        found = tree.lstat(resolved)
        if found is not None and stat.S_ISDIR(found.st_mode):
            self._metadata_step(st, inst, f"WORKDIR {path}")
            return
        if found is not None:
            raise UsageError(f"{inst.where()}: WORKDIR {path} exists and is not a directory")
        mtime = self.opts.timestamp if self.opts.timestamp is not None else int(time.time())
        owner = self._user_ids(st, tree, inst)

        def write(out: IO[bytes]) -> None:
            instructions.mkdir_tar(out, tree, resolved, mtime, owner)

        self._layer_step(
            st,
            inst,
            key,
            f"/bin/sh -c #(nop) WORKDIR {path}",
            lambda: self._layer_from_tar(write, key),
        )

    def _user_ids(self, st: _State, tree: Tree, inst: cf.Instruction) -> tuple[int, int]:
        """The USER's ids, from the stage's own /etc/passwd and /etc/group (BuildKit makes a
        WORKDIR as the USER)."""
        from tophan.build.copy import parse_chown

        if not st.config.user:
            return 0, 0
        try:
            return parse_chown(st.config.user, tree)
        except TophanError as e:
            raise UsageError(
                f"{inst.where()}: WORKDIR as USER {st.config.user}: {e.message}", e.hint
            ) from e

    # -- the result ----------------------------------------------------------------------------

    def _keep_layer(self, st: _State, name: str) -> None:
        """--layer STAGE=NAME: the stage's own layers squashed into one named layer, which
        replaces them in the stage's stack (later stages and the image build on it)."""
        from tophan.build import squash
        from tophan.layer.layers import Layers

        layers = Layers(self.store)
        own = st.digests()[st.base_count :]
        base = st.digests()[: st.base_count]
        trees = [layers.tree_path(d) for d in reversed(own)]
        base_trees = [layers.tree_path(d) for d in reversed(base)]
        scratch = self._path("squash")
        timestamp = self.opts.timestamp

        def fill(tree: str) -> tuple[str, int] | None:
            known = squash.squash(
                trees,
                base_trees,
                tree,
                scratch,
                xattr_ns=self.store.xattr_ns,
                privileged=self.store.privileged,
            )
            if timestamp is None:
                return known
            clamp_times(tree, timestamp)
            return None

        source = {"built_from_stage": st.stage.name or str(st.stage.index)}
        digest = layers.build_tree(fill, name=name, source=source)
        self.layer_digests[st.stage.name or str(st.stage.index)] = digest
        st.stack = [*st.stack[: st.base_count], digest]
        self.out.line(f"--> layer {name} {digest}")

    def _commit(self, st: _State) -> Image:
        from tophan.image.images import Images, new_config

        images = Images(self.store)
        if not st.stack:
            raise UsageError(
                f"{self.file.path}: the image has no layers",
                "FROM scratch needs at least one COPY, ADD or RUN",
            )
        created = st.created or self._now()
        raw = new_config(st.config, st.platform, created, st.history)
        if st.author:
            raw["author"] = st.author
        tags = self.opts.tags or []
        name = tags[0] if tags else f"localhost/tophan-build:{os.urandom(6).hex()}"
        self.out.line(f"COMMIT {name}")
        image = images.assemble(name, st.stack, raw, source="built", replace_existing=True)
        for tag in tags[1:]:
            images.assemble(tag, st.stack, raw, source="built", replace_existing=True)
        self.out.line(f"--> {image.digest}")
        return image


def build(store: StoreRoot, opts: BuildOptions, out: Output | None = None) -> BuildResult:
    """Build ``opts``'s Containerfile into the store; returns the image."""
    return Builder(store, opts, out).build()


def build_from_tar(
    store: StoreRoot, src: IO[bytes], opts: BuildOptions, out: Output | None = None
) -> BuildResult:
    """Build with the context given as a tar stream (``tophan build -``): it is extracted into
    a private staging dir first (no device nodes; names kept inside), removed afterwards."""
    from tophan.layer import tarimport

    staging = store.staging("context")
    try:
        context = os.path.join(staging.path, "context")
        os.mkdir(context, 0o700)
        tarimport.extract(src, context, xattr_ns=store.xattr_ns, privileged=False)
        opts.context = context
        if opts.file is not None and not os.path.isabs(opts.file):
            opts.file = os.path.join(context, opts.file)
        return build(store, opts, out)
    finally:
        staging.discard()


# -- helpers ------------------------------------------------------------------------------------


def _short(text: str, limit: int = 80) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _flags_text(values: dict[str, str]) -> str:
    """The flags that change a COPY's result, after substitution, for its cache key."""
    return "".join(f"--{k}={v} " for k, v in sorted(values.items()) if v)


def clamp_times(tree: str, t: int) -> None:
    """Every entry's mtime (and atime) set to ``t``: a reproducible layer."""
    ns = (t * 1_000_000_000, t * 1_000_000_000)
    for root, dirs, files in os.walk(tree):
        for name in files + dirs:
            os.utime(os.path.join(root, name), ns=ns, follow_symlinks=False)
    os.utime(tree, ns=ns)
