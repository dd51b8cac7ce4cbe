# ecr-operator — every entry point a developer or CI needs. A fresh machine needs only `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := docker-registry skopeo apache2-utils time
PYTEST_ARGS ?=
BENCH ?=
BENCH_RESULTS ?= bench/results
LINT_PATHS := $(wildcard operator sandbox tests bench)

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml sandbox/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./sandbox
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Python virtualenv with the package and dev tools

.PHONY: debian
debian: ## Debian packages the test world and benchmarks use (distribution registry, skopeo, htpasswd, GNU time)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

.PHONY: tools
tools: ## build kube-apiserver, kube-controller-manager, kubectl, etcd, helm from Go modules (cached)
	hack/build-tools.sh

.PHONY: deps
deps: venv debian tools ## everything a fresh machine needs

# lint-imports reads operator/ of this checkout, not whatever checkout the venv's editable install names;
# the graph takes under a second, so no cache directory is left behind.
.PHONY: lint
lint: venv ## ruff lint and format check, then the import contracts (pyproject [tool.importlinter])
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	PYTHONPATH=operator $(BIN)/lint-imports --no-cache

.PHONY: typecheck
typecheck: venv ## mypy --strict (the package, then the benchmarks)
	$(BIN)/mypy
	$(BIN)/mypy --strict bench

.PHONY: crds
crds: venv ## regenerate crds/ (and the chart's copy) from the API models
	$(BIN)/ecr-operator crds --out crds
	$(BIN)/ecr-operator crds --out charts/ecr-operator/crds

.PHONY: unit
unit: venv ## unit tests only
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

.PHONY: test
test: deps lint typecheck ## lint, type checks, and every test (unit, integration, e2e, chaos)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: demo
demo: deps ## start the local world, the operator and the examples (DEMO_ONCE=1 exits after printing)
	$(BIN)/ecr-sandbox demo

.PHONY: bench
bench: deps ## benchmarks side by side with peers (BENCH=mirror|scale, BENCH_RESULTS=dir)
	$(BIN)/python -m bench $(if $(BENCH),--only $(BENCH)) --results $(BENCH_RESULTS)
