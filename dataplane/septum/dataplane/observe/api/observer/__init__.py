"""Generated from Septum's own Hubble-compatible .proto files (make proto)."""
