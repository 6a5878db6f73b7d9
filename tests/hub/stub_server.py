"""A minimal single-user "server" for the load test: answers every GET with its GPU environment.

The hub only needs an HTTP answer at JUPYTERHUB_SERVICE_URL; this starts in
milliseconds, so 50 spawn/stop cycles exercise the pool and the hub, not
Jupyter's start-up time. Exits on SIGINT/SIGTERM like a real server.
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse

KEYS = ("CUDA_VISIBLE_DEVICES", "TOMOLAB_GPU_MEMORY_LIMIT", "TOMOLAB_GPU_PROFILE")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k: os.environ.get(k) for k in KEYS} | {"pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = HTTPServer((url.hostname, url.port), Handler)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
