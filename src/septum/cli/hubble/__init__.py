"""The client half of the Hubble-compatible Observer API, as the hubble CLI has it.

`flags` turns `hubble observe` flags into a GetFlowsRequest without any I/O, `client` checks
the connection settings and dials an Observer, and `printer` renders the answers in Hubble's
output formats. Only the CLI uses them: the server side (`septum.dataplane.observe`) never
imports this package, as Hubble keeps its CLI apart from its server. The import points one
way, from here to the server's generated API and its decoding tables.
"""
