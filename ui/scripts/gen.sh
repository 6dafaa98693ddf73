#!/bin/sh
# TypeScript for Hubble's wire protos (and Septum's own UI service), generated at build time
# from the same .proto files the Python side compiles; protoc is grpcio-tools' bundled one.
set -eu
cd "$(dirname "$0")/.."
py="${PY:-../.venv/bin/python}"
wkt="$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
rm -rf src/gen && mkdir -p src/gen
"$py" -m grpc_tools.protoc -I ../dataplane -I ../src -I "$wkt" \
  --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es --es_out=src/gen --es_opt=target=ts \
  septum/dataplane/observe/api/flow/flow.proto \
  septum/dataplane/observe/api/relay/relay.proto \
  septum/dataplane/observe/api/observer/observer.proto \
  septum/ui/api/v1/policy.proto
