"""The cluster relay: one Hubble Observer endpoint for the whole cluster, merging every agent's
flows (as Hubble Relay does)."""
