"""The `septum` command line: thin wrappers over the product's public Python API."""
