"""StreamedBody (pure bookkeeping of a streamed request body) and reply splitting."""

import os

from ringmaster_handler.body import StreamedBody
from ringmaster_handler.exchange import Exchange
from ringmaster_handler.request import parse_message
from v2peer import m2_request


def test_small_bodies_stay_in_memory_large_ones_go_to_an_unlinked_file():
    body = StreamedBody(in_memory=1000)
    assert body.feed(b"a" * 600) and not body.file._rolled
    assert body.feed(b"b" * 600) and body.file._rolled
    fd = body.file.fileno()
    assert os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    assert not body.ready
    body.finish()
    assert body.ready and body.length == 1200
    assert body.file.read() == b"a" * 600 + b"b" * 600
    assert not body.feed(b"late")  # after E: dropped
    body.close()


def test_the_limit_refuses_and_frees():
    body = StreamedBody(max_size=10)
    assert body.feed(b"x" * 10)
    assert not body.feed(b"y")
    assert body.refused and body.ready and body.file.closed
    assert not body.feed(b"z")
    body.finish()
    assert body.refused and not body.complete


def test_an_announced_length_above_the_limit_is_refused_up_front():
    over = StreamedBody(max_size=10)
    over.check_announced(parse_message(m2_request(1, "/", "POST", {"content-length": "11"})))
    assert over.refused
    fine = StreamedBody(max_size=10)
    fine.check_announced(parse_message(m2_request(1, "/", "POST", {"content-length": "10"})))
    unlimited = StreamedBody()
    unlimited.check_announced(parse_message(m2_request(1, "/", "POST", {"content-length": "99"})))
    assert not fine.refused and not unlimited.refused


def test_long_payloads_are_split_at_max_payload():
    sent = []
    ex = Exchange(sent.append, "HTTP/1.1", True, False, 1 << 40, b"P ", sent.append, None, 1000)
    body = os.urandom(5500)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "5500")])
        return [body]

    ex.run(app, {})
    assert all(m.startswith(b"P ") and len(m) <= 1002 for m in sent)
    assert len(sent) == 6 and ex.messages == 6
    assert b"".join(m[2:] for m in sent).endswith(b"\r\n\r\n" + body)


def test_a_write_error_fails_the_body_instead_of_raising():
    body = StreamedBody(in_memory=10)
    with open("/dev/full", "wb", buffering=0) as full:  # a disk that is always full
        body.file._file = full  # rolled-over writes go to a device that is always full
        body.file._rolled = True
        assert not body.feed(b"x" * 100)
    assert body.failed and body.ready and not body.complete
