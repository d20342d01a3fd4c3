#!/usr/bin/env python3
#
# scripts/demo-receiver.py: the application's callback endpoint in the demo.
#
# Listens on 127.0.0.1 (free port written to --port-file), checks each
# callback's Standard Webhooks signature with the instance secret (read from
# --secret-file once it exists), prints what it got, and answers 200.
# Stops by itself when the process that started it (scripts/demo) is gone,
# or after --lifetime seconds.  Python standard library only.

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def secret_key(path):
    """The HMAC key: the base64 part of the whsec_ secret, decoded."""
    with open(path) as f:
        secret = f.read().strip()
    return base64.b64decode(secret[len("whsec_"):])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        msg_id = self.headers.get("webhook-id", "")
        ts = self.headers.get("webhook-timestamp", "")
        sig = self.headers.get("webhook-signature", "")
        key = secret_key(self.server.secret_file)
        want = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
        ok = any(hmac.compare_digest(s.split(",", 1)[-1], want) for s in sig.split())
        fresh = abs(time.time() - int(ts or 0)) < 300
        event = json.loads(body)
        out = self.server.out
        out.write(f"POST {self.path}\n")
        out.write(f"  user-agent: {self.headers.get('User-Agent')}\n")
        out.write(f"  webhook-id: {msg_id}\n  webhook-timestamp: {ts}\n")
        out.write(f"  webhook-signature: {sig}\n")
        out.write(f"  signature check: {'OK' if ok and fresh else 'FAILED'}"
                  f" (HMAC-SHA256 of id.timestamp.body with the instance secret)\n")
        out.write("  body: " + json.dumps(event, indent=2).replace("\n", "\n  ") + "\n")
        out.flush()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--lifetime", type=float, default=120)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.secret_file = a.secret_file
    srv.out = open(a.log, "a")
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(a.port_file + ".tmp", a.port_file)
    parent = os.getppid()
    deadline = time.monotonic() + a.lifetime

    def watch():
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.5)
        srv.shutdown()

    threading.Thread(target=watch, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
