"""One attacker process: open N connections, send a partial request head, then
one more header line every INTERVAL seconds; report when the server closed each.

    python slow_clients.py HOST PORT N INTERVAL MAX_SECONDS

Prints "ready" once every connection is open, then one JSON line at the end:
{"opened", "failed", "lifetimes": [seconds from connect to the server's close],
"still_open", "answers": [first bytes of what the server sent before closing]}.
Ends when the server has closed them all, or after MAX_SECONDS.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time


def main() -> None:
    host, port, n, interval, max_seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
        float(sys.argv[5])
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    lifetimes: list[float] = []
    answers: set[bytes] = set()
    failed = 0
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((host, port))
            s.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: slow\r\n")
        except OSError:
            failed += 1
            s.close()
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        opened[s] = time.monotonic()
    print("ready", flush=True)

    def closed(s: socket.socket) -> None:
        lifetimes.append(time.monotonic() - opened.pop(s))
        sel.unregister(s)
        s.close()

    start = time.monotonic()
    next_line = start + interval
    while opened and time.monotonic() - start < max_seconds:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:  # reset by the server
                closed(s)
                continue
            if data:
                answers.add(data[:12])
            else:
                closed(s)
        if time.monotonic() >= next_line:
            next_line += interval
            for s in list(opened):
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    closed(s)
    print(json.dumps({"opened": len(lifetimes) + len(opened), "failed": failed, "lifetimes": lifetimes,
                      "still_open": len(opened), "answers": sorted(a.decode("latin-1") for a in answers)}),
          flush=True)


if __name__ == "__main__":
    main()
