"""`septum ui`: serves the web UI's static assets and bridges the browser's gRPC-Web calls.

The browser speaks gRPC-Web (binary framing over HTTP/1.1 or HTTP/2 POSTs, as
@connectrpc/connect-web's gRPC-Web transport sends it); `grpcweb` holds the framing as pure
functions, `bridge` forwards each call unchanged to the relay's (or one agent's) Observer over
real gRPC, and `server` puts both on one aiohttp application.
"""
