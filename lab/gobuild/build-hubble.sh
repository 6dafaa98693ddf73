#!/usr/bin/env bash
# Builds the lab's Go binaries into ~/.cache/septum (placeholder until the lab lands).
exit 0
