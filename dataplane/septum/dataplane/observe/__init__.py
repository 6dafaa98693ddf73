"""Hubble-compatible flow observability, the server half: decode, store, filter and serve flows.

Its errors form one tree under `errors.ObserveError`. The client half (flags, printer,
connection) is `septum.cli.hubble`, which imports this package and never the reverse.
"""

import os

# gRPC's fork handlers make a forked child hang when gRPC threads exist, and the
# agent forks: pyroute2 creates network namespaces in a forked helper. Septum
# never uses gRPC in a child process, so turn the handlers off before grpc is
# first imported (the variable is read once, at import).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
