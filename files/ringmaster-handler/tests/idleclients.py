"""Hold many idle keep-alive connections open against a server, from a separate process.

Each connection sends one GET, reads the whole answer, then stays open without sending
anything: what a careless or hostile client leaves behind. Runs as its own process (one
selectors loop, no threads) so that its file descriptors and CPU are not the test's.

    python idleclients.py PORT COUNT [PATH]

Prints ``held N failed M`` once all are set up, then holds them until stdin closes.
"""

import resource
import selectors
import socket
import sys
import time

# Connections being set up at once: the server's listen backlog is the kernel's somaxconn
# at most, and a SYN flood of 10,000 at once would mostly measure retransmit timers.
IN_FLIGHT = 256


def hold(port: int, count: int, path: str = "/", timeout: float = 60.0) -> tuple[list, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    request = f"GET {path} HTTP/1.1\r\nHost: idle\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    failed = 0
    started = 0
    pending = 0
    deadline = time.monotonic() + timeout
    while (started < count or pending) and time.monotonic() < deadline:
        while started < count and pending < IN_FLIGHT:
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect_ex(("127.0.0.1", port))
            except OSError:
                s.close()
                failed += 1
                started += 1
                continue
            sel.register(s, selectors.EVENT_WRITE, bytearray())
            started += 1
            pending += 1
        for key, events in sel.select(1.0):
            s, buf = key.fileobj, key.data
            try:
                if events & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, "connect failed")
                    s.sendall(request)
                    sel.modify(s, selectors.EVENT_READ, buf)
                    continue
                data = s.recv(65536)
                if not data:
                    raise OSError("closed")
                buf += data
                head, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(body) < length:
                    continue
                sel.unregister(s)
                held.append(s)
                pending -= 1
            except OSError:
                sel.unregister(s)
                s.close()
                failed += 1
                pending -= 1
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        failed += 1
    sel.close()
    return held, failed


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    path = sys.argv[3] if len(sys.argv) > 3 else "/"
    held, failed = hold(port, count, path)
    print(f"held {len(held)} failed {failed}", flush=True)
    sys.stdin.read()
    # Count the connections the server closed while we held them (idle timeouts).
    closed = 0
    for s in held:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"closed_by_server {closed}", flush=True)


if __name__ == "__main__":
    main()
