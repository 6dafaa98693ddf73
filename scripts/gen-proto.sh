#!/usr/bin/env bash
# Generates Python (and mypy stubs) from Septum's own .proto files, in place:
# dataplane/septum/dataplane/observe/api/<pkg>/<pkg>.proto ->
# septum.dataplane.observe.api.<pkg>.<pkg>_pb2 (gitignored, rebuilt by `make proto`).
# The proto root is dataplane/, so every generated import is under `septum.`
# and no bare top-level `flow` or `observer` module can ever exist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PY:-.venv/bin/python}"
# Roots: dataplane/ (Hubble's wire protos) and src/ (septum.ui.v1, the web UI's own service).
total=0
for root in dataplane src; do
  mapfile -t protos < <(cd "$root" && find septum -name '*.proto' | sort)
  [[ ${#protos[@]} -gt 0 ]] || continue
  plugin_args=()
  if [[ -x .venv/bin/protoc-gen-mypy ]]; then
    plugin_args+=(--plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --mypy_out="$root")
  fi
  "$py" -m grpc_tools.protoc -I "$root" \
    --python_out="$root" --grpc_python_out="$root" "${plugin_args[@]}" \
    "${protos[@]}" 2> >(grep -v "^Writing mypy to" >&2)
  total=$((total + ${#protos[@]}))
done
echo "proto: generated $total files under dataplane/septum and src/septum"
