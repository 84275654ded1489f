# trainforge — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export YOLO_OFFLINE := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test test-fast lint bench bench-smoke schema sync-rules crds clean

setup: $(STAMP)  ## Create .venv with everything installed (idempotent).

$(STAMP): pyproject.toml scripts/setup.sh scripts/install-helm.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup  ## Train a detector end to end on the embedded default and print its scores.
	bash scripts/demo.sh

lint: setup  ## ruff + mypy --strict on our packages, and the layers' import contract.
	$(VENV)/bin/ruff check trainforge services jobs tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint  ## Lint, then the whole test suite (real PostgreSQL, S3 server, Ray, helm).
	bash scripts/run-tests.sh

test-fast: setup lint  ## Lint, then every test not marked slow (docs/development.md: ≤ 5 minutes).
	bash scripts/run-tests.sh -m "not slow"

bench: setup  ## Run every benchmark under bench/ at its documented sizes (prints ratios).
	for b in bench/[!_]*.py; do echo "== $$b"; PYTHONPATH=$(CURDIR) $(PY) $$b; done

bench-smoke: setup  ## Every benchmark at tiny sizes (--smoke): does each still run?
	bash scripts/run-tests.sh tests/bench --durations=0

schema: setup  ## Regenerate docs/jobspec.schema.json, docs/openapi.json, the error-code table.
	$(PY) -m trainforge spec-schema > docs/jobspec.schema.json
	PYTHONPATH=$(CURDIR) $(PY) -m services.api.openapi > docs/openapi.json
	PYTHONPATH=$(CURDIR) $(PY) scripts/sync_error_codes.py

crds:  ## Refresh the vendored CRD schemas (tests/fixtures/kubecheck/crds) from their pinned upstream refs.
	bash scripts/vendor-crds.sh

sync-rules:  ## Copy infra/prometheus/rules.yaml into the Helm chart (a packaged chart is self-contained).
	cp infra/prometheus/rules.yaml charts/trainforge/files/prometheus-rules.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
