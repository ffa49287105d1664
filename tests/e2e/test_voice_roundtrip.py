"""A spoken question in, a spoken answer out, through the gateway and all four services."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients.talk import talk
from shared.audio import read_wav
from tests.e2e.conftest import RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


async def test_spoken_question_gets_a_spoken_answer(
    stack: RunningStack, question_wav: Path, tmp_path: Path
) -> None:
    result = await talk(question_wav, url=stack.url, out_path=tmp_path / "reply.wav", timeout_s=90)

    words = result.transcript.lower()
    assert "capital" in words and "france" in words
    assert result.reply_text.strip(), "the assistant said something"
    assert len(result.reply_audio) > result.sample_rate * 2 * 0.3, "at least 0.3 s of reply audio"
    assert result.first_audio_ms is not None
    pcm, rate = read_wav(tmp_path / "reply.wav")
    assert rate == result.sample_rate and pcm == result.reply_audio


async def test_questions_in_a_row_are_all_answered(stack: RunningStack, question_wav: Path) -> None:
    first = await talk(question_wav, url=stack.url, timeout_s=90)
    second = await talk(question_wav, url=stack.url, timeout_s=90)
    assert first.reply_audio and second.reply_audio


def test_make_run_path_voxmesh_up_then_talk_prints_json(question_wav: Path, tmp_path: Path) -> None:
    """No REDIS_URL: `voxmesh up` starts the bundled Redis; `voxmesh talk --json` prints the figures."""
    running = start_stack(tmp_path / "services.log", redis_url=None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "talk", str(question_wav),
             "--out", str(tmp_path / "r.wav"), "--url", running.url, "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        stop_stack(running)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"transcript", "reply_text", "first_audio_ms", "total_ms"}
    assert "france" in report["transcript"].lower()
    assert report["total_ms"] > 0 and report["first_audio_ms"] is not None
    assert (tmp_path / "r.wav").stat().st_size > 44
    assert running.process.returncode == 0
