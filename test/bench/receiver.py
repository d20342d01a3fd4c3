#!/usr/bin/env python3
"""test/bench/receiver.py: a tiny HTTP/1.1 receiver that timestamps arrivals.

    receiver.py PORT

Listens on 127.0.0.1:PORT (keep-alive, any number of connections, asyncio,
standard library only) and answers every request "200 OK" with an empty
body.  For each POST it records the arrival time (time.time() when the
whole request has been read), the webhook-id header and the path.

Control requests (GET):
    /__reset        forget what was recorded
    /__dump?FILE    write the records to FILE as tab-separated
                    "epoch_seconds  webhook_id  path" lines; answers the count

At most 1,000,000 records are kept (then it stops recording).
"""
import asyncio
import sys
import time
import urllib.parse

MAX_RECORDS = 1_000_000
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024
records = []


def respond(writer, status=b"200 OK", body=b""):
    writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " +
                 str(len(body)).encode() + b"\r\n\r\n" + body)


async def handle(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                break
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 2:
                break
            method, target = parts[0], parts[1]
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length < 0 or length > MAX_BODY:
                break
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if length:
                await reader.readexactly(length)
            now = time.time()
            path, _, query = target.partition("?")
            if method == "GET" and path == "/__reset":
                records.clear()
                respond(writer, body=b"0\n")
            elif method == "GET" and path == "/__dump":
                fname = urllib.parse.unquote(query)
                with open(fname, "w") as f:
                    for t, wid, p in records:
                        f.write("%.6f\t%s\t%s\n" % (t, wid, p))
                respond(writer, body=b"%d\n" % len(records))
            else:
                if len(records) < MAX_RECORDS:
                    wid = headers.get("webhook-id", "").replace("\t", " ")
                    records.append((now, wid or "-", path.replace("\t", " ")))
                respond(writer)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port,
                                        backlog=1024, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
