"""Septum's L7 proxies on the node (issue 14): the DNS proxy and its name-to-address learning."""
