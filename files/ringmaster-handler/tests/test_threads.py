"""``ringmaster-wsgi --dispatcher --threads N`` end to end: real Mongrel2, a real dispatcher,
real handler processes running ``threaded_app`` (which counts the requests it runs at once)."""

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import threading
import time

import pytest

from dispatch_harness import DispatcherProc, Worker
from harness import Mongrel2, free_port, handler_route, wait_for
from ringmaster_handler import cli

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)

SLEEP = 0.3  # the slow endpoint's sleep


class Stack:
    """Mongrel2 -> dispatcher -> threaded handler processes, all stopped at the end."""

    def __init__(self, root, dispatcher_args=(), settings=None):
        self.root = root
        route = handler_route()
        self.m2 = Mongrel2(root, {"/": route}, settings)
        self.bind = f"tcp://127.0.0.1:{free_port()}"
        self.dispatcher = DispatcherProc(root, route, self.bind, *dispatcher_args)
        self.workers: list[Worker] = []
        self.threads = 0  # handlers the dispatcher should know: one per thread

    def __enter__(self) -> "Stack":
        try:
            self.m2.start()
            self.dispatcher.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for thing in [*self.workers, self.dispatcher, self.m2]:
            with contextlib.suppress(Exception):
                thing.stop()

    def add(self, threads: int, *args: str) -> Worker:
        w = Worker(self.root, "threaded_app:app", self.bind, "--threads", str(threads), *args)
        self.workers.append(w.start())
        self.threads += threads
        self.dispatcher.wait_connected(self.threads)
        return w

    def call(self, path: str, method: str = "GET", body: bytes | None = None, timeout=10):
        """(status, parsed JSON or raw body, seconds taken)."""
        began = time.monotonic()
        c = self.m2.connection(timeout)
        try:
            c.request(method, path, body=body)
            resp = c.getresponse()
            data = resp.read()
        finally:
            c.close()
        took = time.monotonic() - began
        if resp.status == 200 and data.startswith(b"{"):
            return resp.status, json.loads(data), took
        return resp.status, data, took

    def together(self, requests: list[tuple]) -> list:
        """Send requests ``(path, method, body)`` at once; their results, in order."""
        results: list = [None] * len(requests)

        def one(i, args):
            try:
                results[i] = self.call(*args)
            except Exception as exc:  # (the assertion on results says which)
                results[i] = (None, repr(exc), None)

        threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return results

    def start_marked(self, tmp_path, requests: list[tuple]) -> tuple[list, threading.Thread]:
        """Start ``(method, seconds)`` slow requests at once and wait until all are running."""
        marks = [tmp_path / f"mark-{i}" for i in range(len(requests))]
        calls = [
            (f"/slow?s={s}&mark={m}", method, b"data-%d" % i if method == "POST" else None)
            for i, ((method, s), m) in enumerate(zip(requests, marks, strict=True))
        ]
        box: list = []
        runner = threading.Thread(target=lambda: box.extend(self.together(calls)))
        runner.start()
        wait_for(lambda: all(m.exists() for m in marks), 10, "every slow request to start")
        return box, runner


def test_four_threads_run_four_slow_requests_at_once_and_never_more(tmp_path):
    with Stack(tmp_path) as stack:
        w = stack.add(4)
        assert stack.call("/")[1]["multithread"] is True
        # What ps shows says how many requests the process takes at once.
        cmdline = pathlib.Path(f"/proc/{w.proc.pid}/cmdline").read_bytes()
        assert cmdline.startswith(b"ringmaster-wsgi threaded_app:app (4 threads) -> "), cmdline
        began = time.monotonic()
        results = stack.together([(f"/slow?s={SLEEP}",)] * 4)
        took = time.monotonic() - began
        assert [r[0] for r in results] == [200] * 4, results
        # One process, four requests, about one sleep: concurrency (in turn: 4 x 0.3 s).
        assert {r[1]["pid"] for r in results} == {w.proc.pid}
        assert len({r[1]["thread"] for r in results}) == 4
        assert took < 2 * SLEEP, took
        # Twice as many as threads: two rounds, and never more than 4 at once in the process.
        began = time.monotonic()
        results = stack.together([(f"/slow?s={SLEEP}",)] * 8)
        took = time.monotonic() - began
        assert [r[0] for r in results] == [200] * 8, results
        assert 2 * SLEEP <= took < 4 * SLEEP, took
        assert stack.call("/")[1]["most"] == 4
        # POSTs (never prefetched into a busy thread) too.
        results = stack.together([(f"/slow?s={SLEEP}", "POST", b"p%d" % i) for i in range(4)])
        assert sorted(r[1]["body"] for r in results) == ["p0", "p1", "p2", "p3"]
        assert stack.call("/")[1]["most"] == 4


def test_fast_requests_are_not_stuck_behind_slow_ones_while_a_thread_is_free(tmp_path):
    with Stack(tmp_path) as stack:
        stack.add(4)
        box, runner = stack.start_marked(tmp_path, [("GET", 2), ("GET", 2), ("POST", 2)])
        began = time.monotonic()
        for _ in range(10):
            status, data, took = stack.call("/")
            assert status == 200 and took < SLEEP, took
            assert data["running"] == 3
        assert time.monotonic() - began < 1.5  # all of them while the slow ones ran
        runner.join(10)
        assert [r[0] for r in box] == [200] * 3, box


def test_pipelined_requests_are_answered_in_order_with_threads(tmp_path):
    with Stack(tmp_path) as stack:
        stack.add(4)
        with socket.create_connection(("127.0.0.1", stack.m2.port), timeout=10) as sock:
            # A slow request, then fast ones on the same connection: free threads must not
            # answer the fast ones first.
            sock.sendall(
                b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"
                + b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                + b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        bodies = [json.loads(part.partition(b"\r\n\r\n")[2]) for part in _responses(data)]
        assert [b["path"] for b in bodies] == ["/slow", "/one", "/two"]
        # One at a time: the connection's next request only went out after the previous one.
        assert [b["most"] for b in bodies] == [1, 1, 1]


def _responses(data: bytes) -> list[bytes]:
    parts = data.split(b"HTTP/1.1 200 OK\r\n")
    assert parts[0] == b"", data[:200]
    return [b"\r\n\r\n" + p.partition(b"\r\n\r\n")[2] for p in parts[1:]]


def test_streamed_uploads_to_several_threads_at_once(tmp_path):
    with Stack(tmp_path, settings={"upload.stream": 1}) as stack:
        w = stack.add(4, "--max-body-size", str(16 << 20))
        bodies = [os.urandom((3 << 20) + i) for i in range(4)]
        results = stack.together([(f"/slow?s={SLEEP}", "POST", b) for b in bodies])
        assert [r[0] for r in results] == [200] * 4, results
        for body, (_, data, _) in zip(bodies, results, strict=True):
            assert data["length"] == len(body)
            assert data["sha256"] == hashlib.sha256(body).hexdigest()
            assert data["pid"] == w.proc.pid
        assert stack.call("/")[1]["most"] >= 2  # (some of them ran side by side)
        assert not list((tmp_path / "uploads").iterdir()), "Mongrel2 spooled instead"


def test_sigterm_with_requests_running_on_every_thread_loses_none(tmp_path):
    with Stack(tmp_path) as stack:
        w = stack.add(4)
        box, runner = stack.start_marked(
            tmp_path, [("GET", 1), ("POST", 1.2), ("GET", 1.4), ("POST", 1.6)]
        )
        began = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(10) == 0
        took = time.monotonic() - began
        runner.join(10)
        assert [r[0] for r in box] == [200] * 4, box
        assert {r[1]["pid"] for r in box} == {w.proc.pid}
        assert sorted(r[1]["body"] for r in box) == ["", "", "data-1", "data-3"]
        assert took < 1.6 + 1.5, took  # the slowest one, then a prompt exit
        wait_for(lambda: stack.dispatcher.connected() == 0, 5, "the threads to leave")
        log = stack.dispatcher.log_text()
        assert log.count("is stopping (") == 4
        assert log.count("holding 0 requests") == 4 and "WARNING" not in log, log
        assert "stopped after 4 requests on 4 threads" in w.log_text()


def test_a_killed_processs_gets_are_retried_and_posts_answered_502(tmp_path):
    with Stack(tmp_path) as stack:
        doomed = stack.add(4)
        box, runner = stack.start_marked(
            tmp_path, [("GET", 3), ("POST", 3), ("GET", 3), ("POST", 3)]
        )
        spare = stack.add(2)
        began = time.monotonic()
        doomed.proc.send_signal(signal.SIGKILL)
        runner.join(10)
        took = time.monotonic() - began
        statuses = [r[0] for r in box]
        assert statuses == [200, 502, 200, 502], box
        # The GETs ran again, in the other process.
        assert box[0][1]["pid"] == box[2][1]["pid"] == spare.proc.pid
        assert took < 3 + 1.5, took
        assert "holding 1 requests" in stack.dispatcher.log_text()
        assert stack.call("/")[1]["pid"] == spare.proc.pid


def test_a_request_timeout_gives_504_and_none_of_the_process_threads_more_work(tmp_path):
    with Stack(tmp_path, dispatcher_args=("--request-timeout", "1")) as stack:
        doomed = stack.add(4, "--request-timeout", "1")
        spare = stack.add(1, "--request-timeout", "1")
        began = time.monotonic()
        status, _, took = stack.call("/slow?s=30")
        assert status == 504 and 0.9 < took < 2.0, (status, took)
        # Every request after the 504 goes to the other process, though three threads of
        # the first one are idle (it is about to be ended by SIGALRM).
        served_by = {stack.call("/")[1]["pid"] for _ in range(8)}
        assert served_by == {spare.proc.pid}
        assert doomed.proc.wait(10) == -signal.SIGALRM
        assert time.monotonic() - began < 1 + 2 + 2  # timeout + grace, plus slack
        log = stack.dispatcher.log_text()
        assert "(3 other threads of its process neither;" in log, log


def test_a_thread_that_progresses_does_not_hide_a_stuck_one(tmp_path):
    # (No dispatcher timeout here: only the handler's own alarm can end the stuck request.)
    with Stack(tmp_path) as stack:
        w = stack.add(2, "--request-timeout", "1")
        began = time.monotonic()
        # One thread is stuck; the other streams a response that makes progress (each
        # message re-arms its deadline) for 8 s, far past the stuck one's 1 + 2 s.
        box, runner = stack.start_marked(tmp_path, [("POST", 30)])
        dripping = threading.Thread(target=stack.together, args=([("/drip?n=16&gap=0.5",)],))
        dripping.start()
        wait_for(lambda: w.proc.poll() is not None, 10, "the handler to end")
        assert w.proc.returncode == -signal.SIGALRM
        assert time.monotonic() - began < 1 + 2 + 1.5
        runner.join(5)
        dripping.join(10)
        assert box[0][0] == 502, box  # (a POST: not retried)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dispatcher", "--threads", "0", "apps:hello", "tcp://127.0.0.1:20001"], "--threads"),
        (["--threads", "4", "apps:hello", "tcp://127.0.0.1:20001"], "needs --dispatcher"),
    ],
)
def test_threads_usage_errors(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
