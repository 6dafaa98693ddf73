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
PROTO_SRC   := $(shell find dataplane -name '*.proto' 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: help setup deps venv bpf tools proto gobuild hubble lint test demo clean

help:
	@echo "make demo   set everything up and run the demo"
	@echo "make test   set everything up and run the tests"

## ---- system packages -------------------------------------------------------
deps:
	@scripts/install-apt.sh

## ---- Python virtualenv with pinned dependencies ---------------------------
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
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

## ---- Go-built binaries: Kubernetes, etcd, CoreDNS, helm, agnhost, hubble --
gobuild: deps
	@lab/gobuild/build.sh

hubble: deps
	@lab/gobuild/build-hubble.sh

setup: deps venv bpf tools proto

# Style, types and the import-layering contracts (pyproject.toml [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check src operator dataplane lab tests
	$(VENV)/bin/ruff format --check src operator dataplane lab tests
	$(VENV)/bin/mypy -p septum.operator -p septum.dataplane -p septum.lab -p septum.cli -p septum.bench
	$(VENV)/bin/lint-imports

test: setup lint gobuild hubble
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(SEPTUM) demo

clean:
	rm -rf $(BUILD)
