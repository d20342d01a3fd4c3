#!/usr/bin/env python3
#
# test/tarpit.py: a receiver that accepts connections and never answers.
#
# Listens on 127.0.0.1 on --count free ports (written to --port-file,
# space-separated), reads and
# discards what clients send, answers nothing, and keeps a connection until
# the client closes it.  --stats is rewritten after every change as
# "<connections accepted> <most open at once> <open now>".  Python standard
# library only; bounded: exits after --lifetime seconds.

import argparse
import os
import selectors
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    ap.add_argument("--count", type=int, default=1)
    args = ap.parse_args()

    sel = selectors.DefaultSelector()
    servers = []
    for _ in range(args.count):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1024)
        srv.setblocking(False)
        sel.register(srv, selectors.EVENT_READ)
        servers.append(srv)
    accepted = most = 0
    open_now = set()

    def write_stats():
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d %d %d\n" % (accepted, most, len(open_now)))
        os.replace(tmp, args.stats)

    write_stats()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(str(s.getsockname()[1]) for s in servers))
    os.replace(tmp, args.port_file)

    deadline = time.time() + args.lifetime
    while time.time() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.fileobj in servers:
                try:
                    conn, _addr = key.fileobj.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                open_now.add(conn)
                accepted += 1
                most = max(most, len(open_now))
                write_stats()
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    data = b"x"
                except ConnectionError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    open_now.discard(conn)
                    conn.close()
                    write_stats()


if __name__ == "__main__":
    main()
