# tophan — see README.md. Targets install what they need on a fresh Debian 12 machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# Layer core: busybox-static attr acl umoci tar; rootless tests: python3 python3-venv util-linux
# passwd uidmap; running apps: libseccomp2 iproute2 runc crun podman (peers); images: skopeo
# docker-registry; cgroup v2 VM tests: qemu-system-x86.
DEB_PACKAGES := busybox-static attr acl umoci tar python3 python3-venv util-linux passwd uidmap \
	libseccomp2 iproute2 runc crun podman fuse-overlayfs skopeo docker-registry qemu-system-x86

.PHONY: deps venv demo test test-v2 lint typecheck unit bench clean

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi; \
	fi

$(PY): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m compileall -q src
	touch $(PY)

venv: $(PY)

demo: deps venv
	$(PY) demo/demo.py

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

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
