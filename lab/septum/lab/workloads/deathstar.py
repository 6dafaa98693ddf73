"""The Star Wars demo's "deathstar" API (image docker.io/cilium/starwars), built in.

GET/POST /v1/request-landing answers "Ship landed"; PUT /v1/exhaust-port is the famous flaw.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXHAUST_PORT_PANIC = (
    "Panic: deathstar exploded\n\n"
    "goroutine 1 [running]:\n"
    "main.HandleGarbage(0x2080c3f50, 0x2, 0x4, 0x425c0, 0x5, 0xa)\n"
    "        /code/src/github.com/empire/deathstar/\n"
    "        temp/main.go:9 +0x64\n"
    "main.main()\n"
    "        /code/src/github.com/empire/deathstar/\n"
    "        temp/main.go:5 +0x85\n"
)


class Handler(BaseHTTPRequestHandler):
    server_version = "deathstar"
    # Keep-alive, as the real image's Go server: one connection carries many requests.
    protocol_version = "HTTP/1.1"

    def _send(self, code: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._drain()
        if self.path == "/v1/request-landing":
            self._send(200, "Ship landed\n")
        elif self.path in ("/", "/v1", "/v1/"):
            self._send(
                200,
                json.dumps(
                    {
                        "name": "Death Star",
                        "model": "DS-1 Orbital Battle Station",
                        "manufacturer": "Imperial Department of Military Research",
                    }
                )
                + "\n",
                "application/json",
            )
        elif self.path == "/healthz":
            self._send(200, "ok\n")
        else:
            self._send(404, "Not Found\n")

    def do_POST(self) -> None:  # noqa: N802
        self._drain()
        if self.path == "/v1/request-landing":
            self._send(200, "Ship landed\n")
        else:
            self._send(404, "Not Found\n")

    def do_PUT(self) -> None:  # noqa: N802
        self._drain()
        if self.path == "/v1/exhaust-port":
            self._send(503, EXHAUST_PORT_PANIC)
        else:
            self._send(404, "Not Found\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        print(f"{self.client_address[0]} {format % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="deathstar")
    parser.add_argument("--port", type=int, default=80)
    args, _ = parser.parse_known_args()
    ThreadingHTTPServer(("", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
