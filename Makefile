# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck unit e2e bench clean

STUBS := src/berth/runtime/_api/__init__.py

# berth's modules compiled ahead (an up-to-date one is skipped): where PYTHONDONTWRITEBYTECODE
# is set, as in CI and many containers, every berthd start compiled them again (0.5 s)
install: $(STAMP) $(STUBS)
	@$(VENV)/bin/python -m compileall -q src

$(STAMP): pyproject.toml scripts/install-system.sh
	scripts/install-system.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# containerd's gRPC stubs, generated from Debian's .proto files (git-ignored)
$(STUBS): $(STAMP) scripts/gen-containerd-stubs.sh
	scripts/gen-containerd-stubs.sh $(VENV)/bin/python src

run: install
	@echo "berthd is starting on unix:///run/berth.sock; in another shell run:"
	@echo "    export DOCKER_HOST=unix:///run/berth.sock"
	exec $(VENV)/bin/berthd

lint: install
	$(VENV)/bin/ruff check src tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -q tests/unit

e2e: install
	$(VENV)/bin/pytest -q tests/e2e

test: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

# berthd alone; see bench/README.md for a side-by-side run against dockerd
bench: install
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
