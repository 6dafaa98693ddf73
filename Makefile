# Septum: `make demo` and `make test` are the contract (see README.md).
# Every target installs what it needs, idempotently, on a fresh Debian 12 machine as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
SEPTUM      := $(VENV)/bin/septum
CACHE       := $(HOME)/.cache/septum
BUILD       := build
BPF_OBJ     := $(BUILD)/bpf/septum.bpf.o
CONNRATE    := $(BUILD)/tools/connrate
BPF_SRC     := $(wildcard bpf/*.bpf.c) $(wildcard bpf/include/septum/*.h) $(wildcard bpf/lib/*.h)
PROTO_SRC   := $(shell find dataplane src -name '*.proto' 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: help setup deps venv bpf tools proto ui ui-test gobuild hubble e2e cilium-peer crds crds-upstream lint test demo conformance clean

help:
	@echo "make demo   set everything up and run the demo"
	@echo "make test   set everything up and run the tests"

## ---- system packages -------------------------------------------------------
deps:
	@scripts/install-apt.sh

## ---- Python virtualenv with pinned dependencies ---------------------------
venv: $(VENV)/.installed

# Order-only on deps: python3-venv must be installed before the venv is made, even under make -j.
# A venv made without python3-venv has a python but no pip; it is recreated, not reused.
$(VENV)/.installed: pyproject.toml requirements.lock | deps
	@$(PY) -m pip --version >/dev/null 2>&1 || python3 -m venv --clear $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

## ---- BPF object (clang against the system libbpf headers) -----------------
bpf: $(BPF_OBJ)

$(BPF_OBJ): $(BPF_SRC) | deps
	@mkdir -p $(dir $@)
	clang -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 \
	  -Ibpf/include -Ibpf -I/usr/include/$(shell uname -m)-linux-gnu \
	  -c bpf/septum.bpf.c -o $@

## ---- benchmark helpers (C, no dependencies beyond libc) ---------------------
tools: $(CONNRATE)

$(CONNRATE): tools/connrate.c | deps
	@mkdir -p $(dir $@)
	clang -O2 -Wall -Werror -o $@ $<

## ---- generated protobuf code (Hubble wire format, Septum's own .proto files)
proto: $(BUILD)/.proto-stamp

$(BUILD)/.proto-stamp: $(PROTO_SRC) $(VENV)/.installed scripts/gen-proto.sh
	@scripts/gen-proto.sh
	@mkdir -p $(BUILD) && touch $@

## ---- the web UI (ui/): npm ci from the lockfile, TypeScript generated from the protos, vite
# build into build/ui (served by `septum ui`); redone only when the lockfile or a source changes.
UI_NODE := ui/node_modules/.package-lock.json
UI_SRC  := $(shell find ui/src -path ui/src/gen -prune -o -type f -print 2>/dev/null) \
           ui/index.html ui/vite.config.ts ui/tsconfig.json ui/scripts/gen.sh

ui: $(BUILD)/ui/index.html

$(UI_NODE): ui/package-lock.json | deps
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(BUILD)/ui/index.html: $(UI_NODE) $(UI_SRC) $(PROTO_SRC) $(VENV)/.installed
	cd ui && PY=../$(PY) sh scripts/gen.sh && nice -n 10 npx tsc --noEmit && nice -n 10 npx vite build --logLevel warn
	@touch $@

# The front end's data handling (vitest, node): filters, flow rows, the map's graph, export.
ui-test: ui
	cd ui && npx vitest run

## ---- Go-built binaries: Kubernetes, etcd, CoreDNS, helm, agnhost, hubble --
# scripts/ensure-go.sh prints the bin directory of a Go >= GO_VERSION (lab/gobuild/versions.env):
# the go on PATH when new enough, else one fetched once from the Go module proxy into the cache.
WITH_GO = gobin="$$(scripts/ensure-go.sh)" && PATH="$$gobin:$$PATH"

gobuild: deps
	@$(WITH_GO) lab/gobuild/build.sh

hubble: deps
	@$(WITH_GO) lab/gobuild/build-hubble.sh

# The upstream e2e suite (e2e.test, ginkgo) at the lab's release: `make test` runs a dozen of its
# NetworkPolicy specs (tests/helm/test_e2e_netpol_subset.py), `make conformance` all of them.
e2e: deps
	@$(WITH_GO) lab/gobuild/build-e2e.sh

# Cilium's own bpf_lxc and its Go loader, the peer `septum bench datapath` measures beside Septum
# (cached; the bench and tests/bench/test_cilium_peer_privileged.py build it on first use too).
cilium-peer: deps
	@$(WITH_GO) lab/gobuild/build-cilium-peer.sh

## ---- CRDs: Septum's policy CRDs are generated from the engine's model; the upstream
## ClusterNetworkPolicy CRD is the published one, from a pinned network-policy-api release.
crds: venv
	$(PY) scripts/gen-crds.py

# Also copied into the chart's crds/ (gitignored there: it is the upstream project's file).
crds-upstream: deps
	@$(WITH_GO) crd="$$(scripts/fetch-npapi-crds.sh)" && \
	  cmp -s "$$crd" helm/septum/crds/$$(basename "$$crd") || cp "$$crd" helm/septum/crds/

setup: deps venv bpf tools proto ui

# Style, types and the import-layering contracts (pyproject.toml [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check src operator dataplane agent relay lab tests scripts
	$(VENV)/bin/ruff format --check src operator dataplane agent relay lab tests scripts
	$(VENV)/bin/mypy -p septum.ui -p septum.wellknown -p septum.operator -p septum.dataplane -p septum.agent -p septum.relay -p septum.lab -p septum.cli -p septum.bench -p septum.demo
	$(VENV)/bin/lint-imports
	$(PY) scripts/gen-crds.py --check

test: setup lint ui-test gobuild hubble e2e crds-upstream
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The whole user path on the lab: helm, kubectl and the real hubble CLI are Go-built (cached).
demo: setup gobuild hubble crds-upstream
	$(SEPTUM) demo

# The upstream e2e NetworkPolicy specs against Septum installed by its chart (build/conformance/).
conformance: setup gobuild crds-upstream
	@scripts/conformance.sh

clean:
	rm -rf $(BUILD)
