"""Hubble-compatible flow observability: decode, store, filter and serve flows."""

import os

# gRPC's fork handlers make a forked child hang when gRPC threads exist, and the
# agent forks: pyroute2 creates network namespaces in a forked helper. Septum
# never uses gRPC in a child process, so turn the handlers off before grpc is
# first imported (the variable is read once, at import).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
