# tophan — see README.md. Targets install what they need on a fresh Debian 12 machine.
VENV ?= .venv
PY := $(VENV)/bin/python
.DEFAULT_GOAL := venv
# `make install`: a venv of its own, and the two launchers linked onto PATH.
PREFIX ?= /usr/local
INSTALL_VENV ?= /opt/tophan

# Debian packages, by who needs them (installed only when run as root with apt-get).
# Running tophan: python3 python3-venv (the venv), libseccomp2 (the seccomp filter),
# util-linux uidmap (rootless runs: unshare, newuidmap/newgidmap), iproute2 nftables (private
# networks: bridges, veths, NAT and published ports).
RUN_PACKAGES := python3 python3-venv libseccomp2 util-linux uidmap iproute2 nftables
# The demo: a busybox-static rootfs, and docker-registry to push to and pull from.
DEMO_PACKAGES := $(RUN_PACKAGES) busybox-static docker-registry
# The tests: layer core attr acl umoci tar; passwd (rootless test users); iproute2; peers to
# compare with: runc crun podman fuse-overlayfs skopeo, and buildah (`tophan build`'s peer:
# tests/test_build_peer.py, bench/build.py); cgroup v2 VM tests: qemu-system-x86; gcc libc6-dev
# (static hostile programs: tests/data/*.c, overlayd's fault injectors); openssl (test
# certificates); mmdebstrap (a Debian base for the slow build test); wrk (bench/net.py's client).
TEST_PACKAGES := $(DEMO_PACKAGES) attr acl umoci tar passwd iproute2 runc crun podman \
	fuse-overlayfs skopeo buildah qemu-system-x86 gcc libc6-dev openssl mmdebstrap wrk

# $(call apt_install,PACKAGES): install those missing, as root where apt-get exists.
define apt_install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi; \
	fi
endef

.PHONY: deps demo-deps run-deps venv demo install uninstall test test-v2 lint typecheck unit \
	bench clean

deps:
	$(call apt_install,$(TEST_PACKAGES))

demo-deps:
	$(call apt_install,$(DEMO_PACKAGES))

run-deps:
	$(call apt_install,$(RUN_PACKAGES))

# Stamp files, not $(PY): touching the venv's python would touch the interpreter it links to.
# .runtime: the runtime dependencies only (what the demo needs); .dev adds the test tools.
$(VENV)/.runtime: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m compileall -q src
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.dev

demo: demo-deps $(VENV)/.runtime
	$(PY) demo/demo.py

# A fresh venv each time (an upgrade leaves no stale files), the package built from this tree,
# compiled (start-up time), and bin/tophan, bin/overlayd linked into $(PREFIX)/bin.
install: run-deps
	if [ -f $(INSTALL_VENV)/pyvenv.cfg ]; then rm -rf $(INSTALL_VENV); fi
	python3 -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/python -m pip install -q --upgrade pip
	$(INSTALL_VENV)/bin/python -m pip install -q .
	$(INSTALL_VENV)/bin/python -m compileall -q $(INSTALL_VENV)/lib
	mkdir -p $(PREFIX)/bin
	ln -sf $(abspath $(INSTALL_VENV))/bin/tophan $(PREFIX)/bin/tophan
	ln -sf $(abspath $(INSTALL_VENV))/bin/overlayd $(PREFIX)/bin/overlayd
	@echo "installed: $$(command -v tophan || echo $(PREFIX)/bin/tophan) ($$($(PREFIX)/bin/tophan version))"

uninstall:
	rm -f $(PREFIX)/bin/tophan $(PREFIX)/bin/overlayd
	if [ -f $(INSTALL_VENV)/pyvenv.cfg ]; then rm -rf $(INSTALL_VENV); fi

lint: venv
	$(VENV)/bin/ruff check src tests bench demo
	$(VENV)/bin/ruff format --check src tests bench demo

typecheck: venv
	$(VENV)/bin/mypy

unit: deps venv
	$(VENV)/bin/pytest -q

test: lint typecheck unit

# The cgroup v2 cases, run in a qemu VM with a stock Debian kernel (this host is hybrid v1/v2).
test-v2: deps venv
	tests/vm/test-v2

bench: deps venv
	$(PY) bench/run.py
	$(PY) bench/launch.py
	$(PY) bench/registry.py
	$(PY) bench/net.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
