"""Dispatcher mode end to end: real Mongrel2, a real dispatcher, real handler processes."""

import contextlib
import hashlib
import json
import shutil
import signal
import socket
import threading
import time

import pytest
import zmq

from dispatch_harness import DispatcherProc, Worker
from harness import Mongrel2, free_port, handler_route, wait_for
from loadclient import Load
from ringmaster_handler import cli, dispatcher_cli

pytestmark = pytest.mark.skipif(
    not (shutil.which("mongrel2") and shutil.which("m2sh")), reason="needs mongrel2 and m2sh"
)


class Stack:
    """Mongrel2 -> dispatcher -> handlers, everything stopped at the end."""

    def __init__(
        self,
        root,
        workers: int = 2,
        app: str = "apps:router",
        dispatcher_args=(),
        worker_args=(),
    ):
        self.root = root
        self.route = handler_route()
        self.m2 = Mongrel2(root, {"/": self.route})
        self.bind = f"tcp://127.0.0.1:{free_port()}"
        self.dispatcher = DispatcherProc(root, self.route, self.bind, *dispatcher_args)
        self.worker_args = worker_args
        self.app = app
        self.workers: list[Worker] = []
        self.initial = workers
        self.others: list = []

    def __enter__(self) -> "Stack":
        try:
            self.m2.start()
            self.dispatcher.start()
            self.add_workers(self.initial)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def add_workers(self, n: int, wait: bool = True) -> list[Worker]:
        new = [
            Worker(
                self.root, self.app, self.bind, "--upload-root", str(self.root), *self.worker_args
            ).start(wait=False)
            for _ in range(n)
        ]
        self.workers += new
        if wait:
            for w in new:
                wait_for(w._serving, 15, "a handler to connect")
            self.dispatcher.wait_connected(self.live_workers())
        return new

    def live_workers(self) -> int:
        return sum(w.proc.poll() is None for w in self.workers)

    def __exit__(self, *exc) -> None:
        for thing in [*self.others, *self.workers, self.dispatcher, self.m2]:
            with contextlib.suppress(Exception):
                thing.stop()

    def get(self, path: str, method: str = "GET", body=None, timeout: float = 10):
        c = self.m2.connection(timeout)
        try:
            c.request(method, path, body=body)
            resp = c.getresponse()
            return resp.status, resp.read()
        finally:
            c.close()


@pytest.fixture
def stack(tmp_path):
    with Stack(tmp_path) as s:
        yield s


def test_requests_go_through_the_dispatcher(stack):
    assert stack.get("/") == (200, b"Hello, World!")
    assert stack.get("/echo", "POST", b"payload") == (200, b"payload")
    assert stack.get("/", "HEAD") == (200, b"")
    status, body = stack.get("/stream?n=20&size=1000")
    assert status == 200 and len(body) == 20_000
    assert stack.get("/boom")[0] == 500
    # A body Mongrel2 spools to disk: two notices, only the second is answered.
    big = bytes(range(256)) * 120
    status, body = stack.get("/digest", "POST", big)
    assert status == 200 and json.loads(body)["sha256"] == hashlib.sha256(big).hexdigest()
    # The close message (an empty reply) is a response's last message too.
    for raw in (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", stack.m2.port), timeout=5) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, World!")
    # Keep-alive, several requests on one connection.
    c = stack.m2.connection()
    for n in range(5):
        c.request("POST", "/echo", body=b"%d" % n)
        resp = c.getresponse()
        assert resp.read() == b"%d" % n
    c.close()


def test_a_slow_request_does_not_hold_up_fast_ones(stack, tmp_path):
    mark = tmp_path / "slow-started"
    slow = {}

    def slow_request():
        slow["result"] = stack.get(f"/sleep?s=2&mark={mark}")

    t = threading.Thread(target=slow_request)
    t.start()
    try:
        wait_for(mark.exists, 5, "the slow request to start")
        began = time.monotonic()
        gets = Load(stack.m2.port, clients=4, duration=0.8, timeout=3).start()
        posts = Load(
            stack.m2.port, clients=2, duration=0.8, timeout=3, path="/echo", method="POST"
        ).start()
        get_result, post_result = gets.join(), posts.join()
        assert time.monotonic() - began < 1.8  # all done while the slow one still runs
    finally:
        t.join(10)
    assert slow["result"] == (200, b"Hello, World!")
    for result in (get_result, post_result):
        print(result, max(result.latencies))
        assert result.ok == result.sent > 20, result
        assert max(result.latencies) < 0.5, result


def timed_get(stack, path: str, method: str = "GET", body=None) -> tuple[int, float]:
    began = time.monotonic()
    status, _ = stack.get(path, method, body)
    return status, time.monotonic() - began


def test_no_handler_at_all_means_503_after_the_queue_timeout(tmp_path):
    with Stack(tmp_path, workers=0, dispatcher_args=("--queue-timeout", "0.5")) as stack:
        for method, body in (("GET", None), ("POST", b"x")):
            status, took = timed_get(stack, "/echo", method, body)
            assert status == 503 and 0.45 < took < 1.5, (method, status, took)
        stack.add_workers(1)
        assert stack.get("/") == (200, b"Hello, World!")
    assert "answered 503 to 1 requests no handler started within 0.5s" in (
        stack.dispatcher.log_text()
    )


def test_requests_behind_a_busy_handler_get_503_after_the_queue_timeout(tmp_path):
    mark = tmp_path / "slow-started"
    with Stack(tmp_path, workers=1, dispatcher_args=("--queue-timeout", "0.5")) as stack:
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=stack.get(f"/sleep?s=2.5&mark={mark}")))
        t.start()
        try:
            wait_for(mark.exists, 5, "the slow request to start")
            # A GET waits inside the busy handler, a POST waits in the dispatcher.
            for method, body in (("GET", None), ("POST", b"x")):
                status, took = timed_get(stack, "/echo", method, body)
                assert status == 503 and took < 1.5, (method, status, took)
        finally:
            t.join(10)
        assert slow["r"] == (200, b"Hello, World!")  # the running request was left alone
        assert stack.get("/echo", "POST", b"ok") == (200, b"ok")


def test_no_request_is_lost_when_handlers_stop_and_start(tmp_path):
    with Stack(tmp_path, workers=3, app="apps:hello") as stack:
        load = Load(stack.m2.port, clients=16, duration=4.0, max_requests=200_000, timeout=3)
        load.start()
        time.sleep(0.8)
        first, second = stack.workers[0], stack.workers[1]
        first.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        stack.add_workers(1, wait=False)
        time.sleep(0.7)
        second.proc.send_signal(signal.SIGTERM)
        stack.add_workers(2, wait=False)
        time.sleep(0.5)
        stack.workers[2].proc.send_signal(signal.SIGTERM)
        result = load.join()
        assert first.proc.wait(5) == 0 and second.proc.wait(5) == 0
        assert result.lost == 0 and result.error == 0, result
        assert result.ok == result.sent > 1000, result
        log = stack.dispatcher.log_text()
        assert log.count("is stopping") == 3
        assert "holding 0 requests" in log and "WARNING" not in log


def test_a_killed_handlers_requests_are_retried_or_answered_502(tmp_path):
    with Stack(tmp_path, workers=1) as stack:
        results = {}

        def call(name, path, method):
            results[name] = stack.get(path, method, b"" if method == "POST" else None)

        post_mark, get_mark = tmp_path / "post", tmp_path / "get"
        threads = [
            threading.Thread(target=call, args=("post", f"/sleep?s=3&mark={post_mark}", "POST"))
        ]
        threads[0].start()
        wait_for(post_mark.exists, 5, "the POST to start")
        stack.add_workers(1)
        threads.append(
            threading.Thread(target=call, args=("get", f"/sleep?s=1&mark={get_mark}", "GET"))
        )
        threads[1].start()
        wait_for(get_mark.exists, 5, "the GET to start")
        stack.add_workers(1)
        began = time.monotonic()
        for w in stack.workers[:2]:
            w.proc.send_signal(signal.SIGKILL)
        threads[0].join(5)
        assert results["post"][0] == 502
        assert time.monotonic() - began < 1
        threads[1].join(5)
        assert results["get"] == (200, b"Hello, World!")  # served again by the third
        assert stack.get("/") == (200, b"Hello, World!")


def test_handlers_find_a_restarted_dispatcher_on_their_own(stack):
    assert stack.get("/") == (200, b"Hello, World!")
    assert stack.dispatcher.stop() == 0
    stack.dispatcher.start()
    stack.dispatcher.wait_connected(2)
    for _ in range(4):
        assert stack.get("/") == (200, b"Hello, World!")


def test_garbage_does_not_hurt_the_dispatcher(stack):
    ctx = zmq.Context.instance()
    peers = []
    try:
        for frames in (
            [b""],
            [b"\x00\x01"],
            [b"D", b"x" * 100, b"more"],
            [b"D" + b"\x00" * 8 + b"fake reply"],
            [b"M1234"],
            [b"H{not json"],
            [b"B"],
            [b"Q" + b"\x00" * 8 + b"a request?"],
            [b"Z" * 100_000],
        ):
            peer = ctx.socket(zmq.DEALER)
            peer.setsockopt(zmq.LINGER, 0)
            peer.connect(stack.bind)
            peer.send_multipart(frames)
            peers.append(peer)
        time.sleep(0.3)
        assert stack.get("/") == (200, b"Hello, World!")
        for peer in peers:
            peer.close()
        time.sleep(0.2)
        for _ in range(4):
            assert stack.get("/echo", "POST", b"still here") == (200, b"still here")
        assert stack.dispatcher.proc.poll() is None
        assert "Traceback" not in stack.dispatcher.log_text()
    finally:
        for peer in peers:
            peer.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dispatcher", "apps:hello", "tcp://h:1", "tcp://h:2"], "one spec list"),
        (["--dispatcher", "apps:hello", "tcp://id@h:1"], "take no ident"),
    ],
)
def test_handler_usage_errors_in_dispatcher_mode(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tcp://h:1", "tcp://h:2", "udp://h:3"], "bad spec"),
        (["tcp://h:1", "tcp://h:2", "tcp://x@h:3"], "takes no ident"),
        (["--prefetch", "-1", "tcp://h:1", "tcp://h:2", "tcp://h:3"], "--prefetch"),
        (["--steal-after", "0", "tcp://h:1", "tcp://h:2", "tcp://h:3"], "--steal-after"),
        (["--queue-timeout", "-1", "tcp://h:1", "tcp://h:2", "tcp://h:3"], "--queue-timeout"),
        (
            ["tcp://h:1,tcp://h:4", "tcp://h:2", "tcp://h:3"],
            "lists 2 endpoints but recv_spec lists 1",
        ),
    ],
)
def test_dispatcher_usage_errors(capsys, argv, message):
    assert dispatcher_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ringmaster-dispatcher: error: ") and message in err


def test_one_handler_serves_two_fronts(tmp_path):
    fronts = []
    try:
        for n in range(2):
            root = tmp_path / f"front{n}"
            root.mkdir()
            route = handler_route()
            m2 = Mongrel2(root, {"/": route}).start()
            bind = f"tcp://127.0.0.1:{free_port()}"
            fronts.append((m2, DispatcherProc(root, route, bind).start()))
        worker = Worker(tmp_path, "apps:router", ",".join(d.bind for _, d in fronts)).start()
        fronts.append((worker, None))
        wait_for(lambda: worker.log_text().count("connected to dispatcher") == 2, 10, "links")
        for m2, dispatcher in fronts[:2]:
            dispatcher.wait_connected(1)
            c = m2.connection()
            c.request("POST", "/echo", body=b"front")
            assert c.getresponse().read() == b"front"
            c.close()
        began = time.monotonic()
        assert worker.stop() == 0
        assert time.monotonic() - began < 2
        for _, dispatcher in fronts[:2]:
            assert "is stopping" in dispatcher.log_text()
    finally:
        for a, b in reversed(fronts):
            for thing in (a, b):
                if thing is not None:
                    with contextlib.suppress(Exception):
                        thing.stop()


def test_one_dispatcher_serves_a_route_on_two_mongrel2_servers(tmp_path):
    """The mongrel2 role's TLS server and plain-HTTP server are two Mongrel2 processes whose
    routes to an app have their own sockets and idents: one dispatcher takes both, and each
    reply reaches only the server its request came from (their connection ids overlap)."""
    servers, routes = [], []
    bind = f"tcp://127.0.0.1:{free_port()}"
    try:
        for n in range(2):
            root = tmp_path / f"server{n}"
            root.mkdir()
            routes.append(handler_route())
            servers.append(Mongrel2(root, {"/": routes[-1]}).start())
        merged = {key: ",".join(r[key] for r in routes) for key in ("send", "recv")}
        dispatcher = DispatcherProc(tmp_path, merged, bind).start()
        servers.append(dispatcher)
        assert "did not subscribe" not in dispatcher.log_text()
        assert "servers subscribed" not in dispatcher.log_text()
        worker = Worker(tmp_path, "apps:router", bind).start()
        servers.append(worker)
        dispatcher.wait_connected(1)
        results: dict[tuple[int, int], bytes] = {}

        def client(n: int, m2) -> None:
            c = m2.connection()
            for i in range(20):
                body = b"server%d-request%d" % (n, i)
                c.request("POST", "/echo", body=body)
                results[(n, i)] = c.getresponse().read()
            c.close()

        threads = [threading.Thread(target=client, args=(n, servers[n])) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == {
            (n, i): b"server%d-request%d" % (n, i) for n in range(2) for i in range(20)
        }
    finally:
        for thing in reversed(servers):
            with contextlib.suppress(Exception):
                thing.stop()
