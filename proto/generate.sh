#!/bin/sh
# The one command that turns proto/ into the gRPC stubs under recsys/v1/: the Makefile
# (`make proto`) and docker/Dockerfile both run it, so they cannot compile different sets.
# Run it in a process of its own: grpc_tools.protoc segfaults inside one that imported
# TensorFlow. PYTHON picks the interpreter (the Makefile passes the venv's).
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. \
  --grpc_python_out=. proto/recsys/v1/*.proto
