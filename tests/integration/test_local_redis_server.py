"""The throwaway redis-server behind `voxmesh up` and the tests: port clashes are handled, not hung on."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from shared import redis_server
from shared.redis_server import LocalRedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_picked_port_taken_meanwhile_is_replaced(taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter([taken_port])
    real_free_port = redis_server.free_port
    monkeypatch.setattr(redis_server, "free_port", lambda: next(picks, None) or real_free_port())
    with LocalRedisServer() as server:
        assert server.port != taken_port
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()


def test_a_requested_port_that_is_taken_is_an_error(taken_port: int) -> None:
    with pytest.raises(RuntimeError, match=f"could not listen on port {taken_port}"):
        LocalRedisServer(port=taken_port).start()
