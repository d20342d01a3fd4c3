#!/usr/bin/env python3
#
# test/receiver.py: a local HTTP receiver for the otp_link worker tests.
#
# Listens on 127.0.0.1 on a free port (written to --port-file), and appends
# one JSON line per request to --log:
#   {"t": <unix time>, "method": ..., "path": ..., "peer_port": <client port>,
#    "headers": {lower-case name: value}, "body": ...}
# The path chooses the answer:
#   /ok/...              200
#   /status/<code>/...   <code>
#   /flaky/<n>/...       500 for the first <n> requests of a webhook-id, then 200
#   /slow/<ms>/...       sleeps <ms> milliseconds, then 200
#   /retry-after/<s>/... 429 with "Retry-After: <s>" for the first request of a
#                        webhook-id, then 200
#   /retry-after-date/<s>/...  the same with 503 and an HTTP-date
#   /echo-auth/...       401 with the Authorization header in the body
#   /echo-request/...    401 with the path and every header in the body
#   /echo-pad/<n>/<what>/...  401 with <n> "x" then <what>: "basic" the
#                        decoded Basic credentials, "auth" the Authorization
#                        header, "key" X-Api-Key, "last" the path's last
#                        segment, "headers" every header as JSON
#   /endless/<code>/...  <code> with a chunked body that never ends (bounded
#                        here: 20 s or 1 GiB, then the connection is closed)
#   /huge/<code>/...     <code> announcing "Content-Length: 8 MiB", then
#                        streaming it
#   /garbled/<status>/...  the raw status line "HTTP/1.1 <status> X" for the
#                        first 2 requests of a webhook-id (a malformed answer
#                        for 0 or 199), then 200
# Python standard library only.

import argparse
import base64
import email.utils
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
seen = {}
logf = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # one write per response, no Nagle: no 40 ms delayed-ACK stalls
    wbufsize = 65536
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, code, length):
        """Answer <code>, then a body of "x": chunked and endless when length
        is None, else <length> bytes.  Stops when the client goes away."""
        self.send_response(code)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        chunk = b"x" * 65536
        frame = (b"%x\r\n" % len(chunk)) + chunk + b"\r\n" if length is None else chunk
        deadline = time.time() + 20
        sent = 0
        try:
            while time.time() < deadline and sent < (length or 1 << 30):
                self.wfile.write(frame)
                sent += len(chunk)
                if sent % (1 << 20) == 0:
                    self.wfile.flush()
                    time.sleep(0.005)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace")
        rec = {"t": time.time(), "method": self.command, "path": self.path,
               "peer_port": self.client_address[1],
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body}
        parts = [p for p in self.path.split("/") if p]
        key = (self.path, self.headers.get("webhook-id") or body)
        with lock:
            seen[key] = seen.get(key, 0) + 1
            count = seen[key]
        kind = parts[0] if parts else "ok"
        if kind == "slow":
            time.sleep(int(parts[1]) / 1000.0)
        with lock:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if kind == "status":
            self.reply(int(parts[1]), b"status %s from receiver" % parts[1].encode())
        elif kind == "flaky":
            if count <= int(parts[1]):
                self.reply(500, b"flaky failure")
            else:
                self.reply(200, b"ok")
        elif kind == "retry-after":
            if count == 1:
                self.reply(429, b"slow down", {"Retry-After": parts[1]})
            else:
                self.reply(200, b"ok")
        elif kind == "retry-after-date":
            if count == 1:
                when = email.utils.formatdate(time.time() + int(parts[1]), usegmt=True)
                self.reply(503, b"later", {"Retry-After": when})
            else:
                self.reply(200, b"ok")
        elif kind == "endless":
            self.stream(int(parts[1]), None)
        elif kind == "huge":
            self.stream(int(parts[1]), 8 * 1024 * 1024)
        elif kind == "garbled":
            if count <= 2:
                self.close_connection = True
                self.wfile.write(b"HTTP/1.1 %s X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                 % parts[1].encode())
                self.wfile.flush()
            else:
                self.reply(200, b"ok")
        elif kind == "echo-request":
            self.reply(401, ("unauthorized " + self.path + " " +
                             json.dumps(dict(self.headers.items()))).encode())
        elif kind == "echo-pad":
            auth = self.headers.get("Authorization") or ""
            what = {"basic": lambda: base64.b64decode(auth[6:]).decode("utf-8", "replace"),
                    "auth": lambda: auth,
                    "key": lambda: self.headers.get("X-Api-Key") or "",
                    "last": lambda: parts[-1],
                    "headers": lambda: json.dumps(dict(self.headers.items()))}[parts[2]]()
            self.reply(401, ("x" * int(parts[1]) + what).encode())
        elif kind == "echo-auth":
            self.reply(401, ("bad token " + (self.headers.get("Authorization") or "")).encode())
        else:
            self.reply(200, b"ok")


def main():
    global logf
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    logf = open(args.log, "a", encoding="utf-8")
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 512
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
