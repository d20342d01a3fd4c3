#!/usr/bin/env python3
#
# test/soak/flaky_receiver.py: a misbehaving HTTP receiver for the otp_link
# soak (test/soak/run.sh) and the fault TAP tests (test/t/04x_*.pl).
#
# Listens on 127.0.0.1 only, on --port (0: a free port), and writes the port
# to --port-file once it listens.  Appends one JSON line per request to
# --log (see "rec" below).  Python standard library only.
#
# The path chooses the behaviour: /<tag>/<mode>/<anything>
#   tag    names the instance whose secret signs the request; the secrets are
#          a JSON object {tag: "whsec_..."} in --secrets (re-read whenever the
#          file changes); "-" or an unknown tag: the signature is not checked
#   mode   ok     200
#          f<N>   the first N requests of each webhook-id get a fault, drawn
#                 from the mix below, then 200
#          dead   every request gets a fault (never "late": nothing is
#                 processed)
#          gone   410
# Faults:
#   500      HTTP 500
#   429ra    HTTP 429 with Retry-After: 1
#   timeout  sleeps --timeout-ms + 500 ms, then closes without answering
#   late     sleeps --timeout-ms + 500 ms, processes the event, then answers
#            200 (too late: the worker has given up; the event WAS processed,
#            so the retry that follows is a duplicate webhook-id)
#   drop     reads the request and closes the connection (FIN), no answer
#   reset    reads the request and resets the connection (RST), no answer
#
# "processed" is what a real application would do with the event: the first
# processed request of a webhook-id is new, later ones are duplicates
# ("dup": true) that a correct application ignores (Standard Webhooks:
# deduplicate on webhook-id).
#
# Each log line: {"t", "path", "tag", "mode", "wid", "ts", "type", "uuid",
#                 "n" (requests so far for this webhook-id), "fault",
#                 "status" (HTTP status answered, or null), "processed",
#                 "dup", "sig" (true/false, null when not checked)}
# "type"/"uuid": a callback's type and data.uuid, or a reply's event and link.

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = [("500", 3), ("timeout", 2), ("drop", 2), ("reset", 1), ("late", 1), ("429ra", 1)]
DEAD_FAULTS = [f for f in FAULTS if f[0] != "late"]

lock = threading.Lock()
counts = {}          # webhook-id -> requests so far
processed = set()    # webhook-ids processed
args = None
logf = None
secrets = {}
secrets_mtime = None


def load_secrets():
    global secrets, secrets_mtime
    if not args.secrets:
        return
    try:
        m = os.stat(args.secrets).st_mtime_ns
    except FileNotFoundError:
        return
    if m != secrets_mtime:
        with open(args.secrets) as f:
            secrets = json.load(f)
        secrets_mtime = m


def check_sig(tag, wid, ts, sig, body):
    with lock:
        load_secrets()
        secret = secrets.get(tag)
    if not secret:
        return None
    key = base64.b64decode(secret[len("whsec_"):])
    want = base64.b64encode(hmac.new(key, f"{wid}.{ts}.".encode() + body,
                                     hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s.split(",", 1)[-1], want) for s in sig.split())


def pick(mix, rng):
    total = sum(w for _, w in mix)
    x = rng.uniform(0, total)
    for name, w in mix:
        x -= w
        if x <= 0:
            return name
    return mix[-1][0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def answer(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        parts = [p for p in self.path.split("/") if p]
        tag = parts[0] if len(parts) > 0 else "-"
        mode = parts[1] if len(parts) > 1 else "ok"
        wid = self.headers.get("webhook-id") or ""
        ts = self.headers.get("webhook-timestamp") or ""
        sig = check_sig(tag, wid, ts, self.headers.get("webhook-signature") or "", body)
        typ = uuid = None
        try:
            doc = json.loads(body)
            if isinstance(doc, dict):
                if "type" in doc:
                    typ = doc.get("type")
                    uuid = (doc.get("data") or {}).get("uuid")
                else:
                    typ = doc.get("event")
                    uuid = doc.get("link")
        except ValueError:
            pass
        key = wid or self.path
        with lock:
            counts[key] = counts.get(key, 0) + 1
            count = counts[key]
        rng = random.Random(f"{args.seed}:{key}:{count}")

        fault = None
        if mode == "gone":
            fault = "410"
        elif mode == "dead":
            fault = pick(DEAD_FAULTS, rng)
        elif mode.startswith("f") and mode[1:].isdigit() and count <= int(mode[1:]):
            fault = pick(FAULTS, rng)

        rec = {"t": time.time(), "path": self.path, "tag": tag, "mode": mode,
               "wid": wid, "ts": ts, "type": typ, "uuid": uuid, "n": count,
               "fault": fault, "status": None, "processed": False, "dup": False,
               "sig": sig}

        if fault in ("timeout", "late"):
            time.sleep((args.timeout_ms + 500) / 1000.0)
        if fault is None or fault == "late":
            with lock:
                rec["dup"] = key in processed
                processed.add(key)
            rec["processed"] = True
            rec["status"] = 200
        elif fault in ("500", "429ra", "410"):
            rec["status"] = int(fault[:3])

        # log before answering: once the worker has its answer, the line is there
        with lock:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()

        try:
            if fault in ("timeout", "drop"):
                self.close_connection = True
            elif fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()     # RST now, before any FIN
            elif fault == "500":
                self.answer(500, b"flaky receiver: 500")
            elif fault == "429ra":
                self.answer(429, b"flaky receiver: slow down", {"Retry-After": "1"})
            elif fault == "410":
                self.answer(410, b"flaky receiver: gone")
            else:
                self.answer(200, b"ok")
        except OSError:
            self.close_connection = True    # "late": the worker hung up


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True


def main():
    global args, logf
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--secrets")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--timeout-ms", type=int, default=1000,
                    help="the worker's otp_link.timeout; timeouts sleep 500 ms longer")
    ap.add_argument("--lifetime", type=float, default=3600,
                    help="exit after this many seconds (a bound if the caller dies)")
    args = ap.parse_args()
    logf = open(args.log, "a", encoding="utf-8")
    srv = Server(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    threading.Timer(args.lifetime, lambda: os._exit(0)).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
