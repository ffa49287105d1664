"""The ACL that deploy/k8s/base/redis-acl.sh writes (compose and Kubernetes both use it), loaded by a
real Redis 7: every service user can do what the services do on vm:* keys and nothing dangerous;
KEDA's and the exporter's users can only read; the default user is off."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.deploy_support import QUEUES, REDIS_ACL_SCRIPT, REDIS_USERS, SERVICES
from tests.ports import free_port_run

pytestmark = pytest.mark.integration


def _password(user: str) -> str:
    return f"{user}-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Redis 7 started with the generated ACL file; yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server (Redis 7) not installed")
    directory = tmp_path_factory.mktemp("redis-acl")
    passwords = directory / "passwords"
    passwords.mkdir()
    for user in REDIS_USERS:
        (passwords / user).write_text(_password(user) + "\n")
    acl_file = directory / "users.acl"
    subprocess.run(
        ["sh", str(REDIS_ACL_SCRIPT), str(passwords), str(acl_file)], check=True, capture_output=True
    )
    port = free_port_run()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--aclfile", str(acl_file)]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, username="exporter", password=_password("exporter")).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _client(port: int, user: str) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=_password(user))


def test_acl_file_holds_hashes_only(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    for user in REDIS_USERS:
        (passwords / user).write_text(_password(user))
    acl_file = tmp_path / "users.acl"
    subprocess.run(
        ["sh", str(REDIS_ACL_SCRIPT), str(passwords), str(acl_file)], check=True, capture_output=True
    )
    text = acl_file.read_text()
    assert not any(_password(user) in text for user in REDIS_USERS)
    assert text.splitlines()[0].startswith("user default off")
    # A missing password stops it: Redis never starts with a user anyone could guess.
    (passwords / "keda").unlink()
    failed = subprocess.run(
        ["sh", str(REDIS_ACL_SCRIPT), str(passwords), str(tmp_path / "x.acl")], check=False
    )
    assert failed.returncode != 0 and not (tmp_path / "x.acl").exists()


def test_default_user_is_off(acl_redis: int) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis).ping()


@pytest.mark.parametrize("user", SERVICES)
def test_service_users_can_run_the_bus(acl_redis: int, user: str) -> None:
    r = _client(acl_redis, user)
    stream, group = QUEUES["llm"]
    session = keys.session_out(f"acl-{user}")
    if not r.exists(stream):
        r.xgroup_create(stream, group, id="0", mkstream=True)
    r.xadd(stream, {"m": b"x"}, maxlen=100, approximate=True)
    r.xreadgroup(group, f"c-{user}", {stream: ">"}, count=1, block=10)
    r.xautoclaim(stream, group, f"c2-{user}", 0, "0-0")
    r.xpending_range(stream, group, "-", "+", 10)
    r.xtrim(stream, minid="0-1", approximate=True)
    with r.pipeline(transaction=True) as pipe:
        pipe.xadd(session, {"m": b"x"})
        pipe.expire(session, 60)
        pipe.rpush(keys.history(f"acl-{user}"), "a")
        pipe.ltrim(keys.history(f"acl-{user}"), -5, -1)
        pipe.execute()
    assert r.eval("return redis.call('INCR', KEYS[1])", 1, keys.turn_counter(f"acl-{user}")) == 1
    assert (
        r.register_script("return redis.call('GET', KEYS[1])")(keys=[keys.turn_counter(f"acl-{user}")])
        == b"1"
    )
    r.publish(keys.CANCEL_CHANNEL, "x")
    pubsub = r.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(keys.CANCEL_CHANNEL)
    assert pubsub.get_message(timeout=1) is not None
    pubsub.close()
    # Nothing outside vm:*, nothing that could wipe or reconfigure the server.
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.set("not-voxmesh", 1)
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("user", ["keda", "exporter"])
def test_keda_and_exporter_only_read_the_queues(acl_redis: int, user: str) -> None:
    writer = _client(acl_redis, "asr")
    stream, group = QUEUES["asr"]
    if not writer.exists(stream):
        writer.xgroup_create(stream, group, id="0", mkstream=True)
    r = _client(acl_redis, user)
    r.xinfo_groups(stream)
    r.xlen(stream)
    if user == "keda":
        r.xpending(stream, group)
    else:
        assert "redis_version" in r.info("server")
    for command in (("XADD", stream, "*", "a", "1"), ("DEL", stream), ("FLUSHALL",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)  # type: ignore[no-untyped-call]
