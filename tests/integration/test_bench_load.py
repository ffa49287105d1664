"""`voxmesh bench load`, tiny: two sessions through fake engines, then again with two gateways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_load_smoke(tmp_path: Path) -> None:
    out, plot, doc = tmp_path / "load.json", tmp_path / "load.png", tmp_path / "bench.md"
    command = [
        sys.executable, "-m", "services.cli", "bench", "load", "--engines", "fake", "--sessions", "2",
        "--turns", "1", "--stagger", "0.5", "--client-procs", "1", "--scale", "gateway",
        "--json", str(out), "--plot", str(plot), "--doc", str(doc),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [sweep["label"] for sweep in report["sweeps"]] == ["1 replica each", "gateway ×2"]
    for sweep in report["sweeps"]:
        [level] = sweep["levels"]
        assert level["sessions"] == 2 and level["all_answered"], level
        assert level["questions_answered"] == 2 and len(level["v2v_ms"]) == 2
        assert level["hop_count"] > 100 and level["hop_p99_ms"] is not None
        assert {"audio_in", "session_out", "llm_requests", "tts_requests"} <= set(
            level["hop_p99_by_stream_ms"]
        )
        assert level["dropped"] == 0
        assert level["cpu_cores"]["gateway-1"] > 0 and level["rss_mb"]["asr-1"] > 10
        assert level["autoscaler_replicas"] == {"gateway": 2, "asr": 1, "llm": 1, "tts": 1}
    assert "gateway-2" in report["sweeps"][1]["levels"][0]["cpu_cores"]
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "voice-to-voice p50" in doc.read_text() and "load.png" in doc.read_text()
