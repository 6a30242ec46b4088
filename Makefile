# tophan — see README.md. Targets install what they need on a fresh Debian 12 machine.
VENV ?= .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := busybox-static attr acl umoci tar python3 python3-venv util-linux passwd

.PHONY: deps venv demo test lint typecheck unit bench clean

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

bench: deps venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
