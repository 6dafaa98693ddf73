"""Hubble-compatible flow observability: decode, store, filter and serve flows."""
