"""The whole assistant on a real three-master Redis Cluster: a spoken question gets a spoken answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import RedisCluster

from clients.talk import talk
from shared import keys
from tests.e2e.conftest import start_stack, stop_stack
from tests.redis_cluster import running_cluster

pytestmark = pytest.mark.e2e


async def test_a_spoken_turn_over_redis_cluster(question_wav: Path, tmp_path: Path) -> None:
    with running_cluster() as cluster:
        stack = start_stack(tmp_path / "services.log", cluster.url)
        try:
            result = await talk(question_wav, url=stack.url, timeout_s=90)
            client = RedisCluster(host="127.0.0.1", port=cluster.ports[1])
            try:
                # Every work queue has its group, wherever its slot landed.
                for queue in (keys.ASR_DISPATCH, keys.LLM_REQUESTS, keys.TTS_REQUESTS):
                    assert await client.xinfo_groups(queue), queue
                queues = (keys.ASR_DISPATCH, keys.LLM_REQUESTS, keys.TTS_REQUESTS)
                nodes = {getattr(client.get_node_from_key(queue), "port", None) for queue in queues}
            finally:
                await client.aclose()
        finally:
            stop_stack(stack)
    assert stack.process.returncode == 0, stack.log_path.read_text()[-3000:]
    words = result.transcript.lower()
    assert "capital" in words and "france" in words
    assert result.reply_text.strip() and result.first_audio_ms is not None
    assert len(result.reply_audio) > result.sample_rate * 2 * 0.3, "at least 0.3 s of reply audio"
    assert len(nodes) == 3, "the three work queues live on three different masters"
