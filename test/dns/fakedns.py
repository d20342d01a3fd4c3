#!/usr/bin/env python3
#
# test/dns/fakedns.py: a tiny DNS server for the delivery-isolation test.
#
# Listens on UDP <address>:53 (root is needed to bind; it then drops to
# --user), answers A queries and writes nothing to the host:
#   *.slow.otp-link.test   127.0.0.1 after --delay seconds (a resolver that
#                          hangs; both A and AAAA are delayed)
#   *.fast.otp-link.test   127.0.0.1 at once
#   anything else          forwarded to --upstream (the host's name server,
#                          so that npm and apt keep working), NXDOMAIN at
#                          once when there is none
# AAAA queries of the fast names get an empty answer.  Python standard
# library only; each slow answer waits in its own thread.

import argparse
import os
import pwd
import socket
import struct
import threading
import time


def parse_question(msg):
    """(qname, qtype, end offset) of the first question of a query."""
    i = 12
    labels = []
    while msg[i] != 0:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    qtype, _qclass = struct.unpack("!HH", msg[i + 1:i + 5])
    return ".".join(labels), qtype, i + 5


def answer(query, rcode, a_record):
    """The response to query: its header and question, then one A record."""
    qid = query[:2]
    _name, _qtype, end = parse_question(query)
    flags = 0x8180 | rcode          # response, recursion desired + available
    ancount = 1 if a_record else 0
    header = qid + struct.pack("!HHHHH", flags, 1, ancount, 0, 0)
    body = query[12:end]
    if a_record:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(a_record)
    return header + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default="127.0.0.153")
    ap.add_argument("--delay", type=float, default=20.0)
    ap.add_argument("--user", default="nobody")
    ap.add_argument("--log", default=None)
    ap.add_argument("--upstream", default=None)
    args = ap.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.address, 53))
    logf = open(args.log, "a", buffering=1) if args.log else None
    if os.getuid() == 0:
        pw = pwd.getpwnam(args.user)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    lock = threading.Lock()

    def send_later(resp, peer, delay):
        time.sleep(delay)
        with lock:
            sock.sendto(resp, peer)

    def forward(query, peer):
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.settimeout(5)
        try:
            up.sendto(query, (args.upstream, 53))
            resp, _ = up.recvfrom(65535)
        except OSError:
            resp = answer(query, 2, None)   # SERVFAIL
        finally:
            up.close()
        with lock:
            sock.sendto(resp, peer)

    while True:
        query, peer = sock.recvfrom(4096)
        try:
            name, qtype, _end = parse_question(query)
        except (IndexError, struct.error):
            continue
        if logf:
            logf.write("%.3f %s %d\n" % (time.time(), name, qtype))
        if name.endswith("slow.otp-link.test"):
            resp = answer(query, 0, "127.0.0.1" if qtype == 1 else None)
            threading.Thread(target=send_later, args=(resp, peer, args.delay),
                             daemon=True).start()
            continue
        if name.endswith("fast.otp-link.test"):
            resp = answer(query, 0, "127.0.0.1" if qtype == 1 else None)
        elif args.upstream and not name.endswith("otp-link.test"):
            threading.Thread(target=forward, args=(query, peer), daemon=True).start()
            continue
        else:
            resp = answer(query, 3, None)
        with lock:
            sock.sendto(resp, peer)


if __name__ == "__main__":
    main()
