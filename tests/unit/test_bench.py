"""`voxmesh bench latency`: the energy cut, /metrics deltas, statistics, the table, busy cores."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clients.bench.endcut import cut_at_speech_end, speech_end
from clients.bench.load import busy_cores
from clients.bench.metrics import count_deltas, delta, parse_histograms, stage_deltas
from clients.bench.report import Run, format_ms, summary, table, to_json
from clients.bench.results import TurnResult
from clients.bench.stats import Summary, ratio, ratios, summarize, summarize_stage

pytestmark = pytest.mark.unit

RATE = 16000


def _pcm(signal: np.ndarray) -> bytes:
    return bytes((np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def _voice(seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """A speech-like tone: 150 Hz with harmonics, slowly modulated."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 5))
    return amplitude * tone / 2.0 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))


# ---- the energy cut


def test_cut_lands_right_after_the_speech() -> None:
    speech = _voice(1.0)
    pcm = _pcm(np.concatenate([np.zeros(RATE // 4), speech, np.zeros(RATE)]))
    end_s = speech_end(pcm) / RATE
    assert 1.25 <= end_s <= 1.25 + 0.02 + 0.03 + 1e-9  # after the tone, within a frame plus the tail
    assert len(cut_at_speech_end(pcm)) == speech_end(pcm) * 2


def test_cut_ignores_a_noise_floor_far_below_the_speech() -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.5 * 10 ** (-55 / 20), RATE)  # about -55 dB
    pcm = _pcm(np.concatenate([_voice(0.5), noise]))
    assert speech_end(pcm) / RATE <= 0.5 + 0.05 + 1e-9


def test_cut_keeps_a_soft_ending_above_the_threshold() -> None:
    pcm = _pcm(np.concatenate([_voice(0.5), _voice(0.2, amplitude=0.05), np.zeros(RATE // 2)]))
    assert speech_end(pcm) / RATE >= 0.7  # -20 dB is still speech


def test_cut_keeps_the_whole_file_when_speech_runs_to_its_end() -> None:
    pcm = _pcm(_voice(0.5))
    assert cut_at_speech_end(pcm) == pcm


@pytest.mark.parametrize("pcm", [bytes(RATE * 2), b""])
def test_cut_refuses_a_silent_recording(pcm: bytes) -> None:
    with pytest.raises(ValueError, match="silent"):
        speech_end(pcm)


# ---- /metrics deltas

_BEFORE = """\
# HELP voxmesh_llm_first_token_seconds Reply request received to first generated text.
# TYPE voxmesh_llm_first_token_seconds histogram
voxmesh_llm_first_token_seconds_bucket{le="0.1"} 2.0
voxmesh_llm_first_token_seconds_bucket{le="+Inf"} 2.0
voxmesh_llm_first_token_seconds_count 2.0
voxmesh_llm_first_token_seconds_sum 0.05
# HELP voxmesh_tts_first_byte_seconds Phrase received to its first audio chunk sent.
# TYPE voxmesh_tts_first_byte_seconds histogram
voxmesh_tts_first_byte_seconds_bucket{le="+Inf"} 4.0
voxmesh_tts_first_byte_seconds_count 4.0
voxmesh_tts_first_byte_seconds_sum 0.4
# HELP voxmesh_messages_dropped_total Bus messages dropped, by reason.
# TYPE voxmesh_messages_dropped_total counter
voxmesh_messages_dropped_total{reason="stale"} 3.0
"""

_AFTER = """\
# HELP voxmesh_llm_first_token_seconds Reply request received to first generated text.
# TYPE voxmesh_llm_first_token_seconds histogram
voxmesh_llm_first_token_seconds_bucket{le="0.1"} 3.0
voxmesh_llm_first_token_seconds_bucket{le="+Inf"} 3.0
voxmesh_llm_first_token_seconds_count 3.0
voxmesh_llm_first_token_seconds_sum 0.07
# HELP voxmesh_llm_first_phrase_seconds Reply request received to first phrase sent to TTS.
# TYPE voxmesh_llm_first_phrase_seconds histogram
voxmesh_llm_first_phrase_seconds_bucket{le="+Inf"} 0.0
voxmesh_llm_first_phrase_seconds_count 0.0
voxmesh_llm_first_phrase_seconds_sum 0.0
# HELP voxmesh_tts_first_byte_seconds Phrase received to its first audio chunk sent.
# TYPE voxmesh_tts_first_byte_seconds histogram
voxmesh_tts_first_byte_seconds_bucket{le="+Inf"} 7.0
voxmesh_tts_first_byte_seconds_count 7.0
voxmesh_tts_first_byte_seconds_sum 0.7
"""


def test_a_histogram_that_rose_by_one_gives_the_turns_value() -> None:
    observed = delta(parse_histograms(_BEFORE), parse_histograms(_AFTER), "voxmesh_llm_first_token_seconds")
    assert observed is not None and observed.exact
    assert observed.seconds == pytest.approx(0.02)


def test_a_histogram_that_rose_by_more_gives_the_mean() -> None:
    observed = delta(parse_histograms(_BEFORE), parse_histograms(_AFTER), "voxmesh_tts_first_byte_seconds")
    assert observed is not None and not observed.exact
    assert observed.count == 3
    assert observed.seconds == pytest.approx(0.1)


def test_a_histogram_that_did_not_rise_gives_nothing() -> None:
    before, after = parse_histograms(_BEFORE), parse_histograms(_AFTER)
    assert delta(before, after, "voxmesh_llm_first_phrase_seconds") is None
    assert delta(before, after, "voxmesh_asr_final_latency_seconds") is None
    assert "voxmesh_messages_dropped_total" not in after  # counters are not histograms


def test_stage_deltas_flag_means_missing_stages_and_silent_services() -> None:
    before = {"llm": parse_histograms(_BEFORE), "tts": parse_histograms(_BEFORE)}
    after = {"llm": parse_histograms(_AFTER), "tts": parse_histograms(_AFTER)}
    stages, flags = stage_deltas(before, after)
    assert stages == {"llm_first_token": pytest.approx(20.0), "tts_first_byte": pytest.approx(100.0)}
    assert "tts_first_byte: mean of 3 observations" in flags
    assert "llm_first_phrase: not observed" in flags
    assert "endpoint: asr /metrics unavailable" in flags
    assert "gateway_first_audio: gateway /metrics unavailable" in flags


# ---- statistics and the table


_COUNTERS_BEFORE = """# TYPE voxmesh_speculative_replies_total counter
voxmesh_speculative_replies_total{outcome="started"} 3.0
voxmesh_speculative_replies_total{outcome="used"} 2.0
"""
_COUNTERS_AFTER = """# TYPE voxmesh_speculative_replies_total counter
voxmesh_speculative_replies_total{outcome="started"} 5.0
voxmesh_speculative_replies_total{outcome="used"} 3.0
voxmesh_speculative_replies_total{outcome="discarded"} 1.0
"""


def test_counters_that_rose_during_a_turn_are_counted_by_label() -> None:
    before = {"gateway": parse_histograms(_COUNTERS_BEFORE)}
    after = {"gateway": parse_histograms(_COUNTERS_AFTER)}
    counts = count_deltas(before, after)
    assert counts["speculations_started"] == 2
    assert counts["speculations_used"] == 1
    assert counts["speculations_discarded"] == 1, "a label set first seen after the turn counts from 0"
    assert "verdicts_complete" not in counts, "no ASR scrape: not counted"


def test_the_final_after_the_end_of_turn_is_derived_from_the_two_asr_stages() -> None:
    text = """# TYPE voxmesh_asr_endpoint_seconds histogram
voxmesh_asr_endpoint_seconds_count 1.0
voxmesh_asr_endpoint_seconds_sum 0.25
# TYPE voxmesh_asr_final_latency_seconds histogram
voxmesh_asr_final_latency_seconds_count 1.0
voxmesh_asr_final_latency_seconds_sum 0.31
"""
    stages, _ = stage_deltas({"asr": {}}, {"asr": parse_histograms(text)})
    assert stages["final_after_endpoint"] == pytest.approx(60.0)


def test_percentiles_and_ratios() -> None:
    found = summarize([100.0, 200.0, 300.0, 400.0, 500.0])
    assert found is not None and (found.count, found.p50) == (5, 300.0)
    assert found.p95 == pytest.approx(480.0)
    assert summarize([]) is None
    assert ratio(300.0, 200.0) == pytest.approx(1.5)
    assert ratio(1.0, 0.0) is None and ratio(None, 2.0) is None
    both = ratios(Summary(3, 900.0, 1200.0), Summary(3, 600.0, 800.0))
    assert both.p50 == pytest.approx(1.5)
    assert both.p95 == pytest.approx(1.5)
    assert ratios(None, Summary(1, 1.0, 1.0)).p50 is None


def _turn(mode: str, index: int, first_audio: float, error: str | None = None) -> TurnResult:
    stages = {"endpoint": 400.0, "asr_final": 450.0, "first_audio": first_audio}
    if mode == "mesh":
        stages["gateway_first_audio"] = first_audio - 20.0
    else:
        stages["whisper"] = 50.0
    return TurnResult(index, "What is the capital of France?", mode, stages, error=error)  # type: ignore[arg-type]


def test_failed_turns_are_left_out_of_the_percentiles() -> None:
    turns = [_turn("mesh", 0, 800.0), _turn("mesh", 1, 5000.0, error="no reply within 60 s")]
    found = summarize_stage(turns, "first_audio")
    assert found is not None and found.count == 1 and found.p50 == 800.0


def test_table_rows_cells_and_ratio() -> None:
    mesh = [_turn("mesh", i, ms) for i, ms in enumerate((800.0, 900.0, 1000.0))]
    local = [_turn("in-process", i, ms) for i, ms in enumerate((500.0, 600.0, 700.0))]
    run = Run("voxmesh bench latency", "ws://x/v1/realtime", 3, 0, ["q"], mesh, local, load_average="0.5")
    text = table(mesh, local, run.ratios())
    lines = text.splitlines()
    assert lines[0].startswith("| stage |") and lines[1].startswith("|---")
    whisper = next(line for line in lines if line.startswith("| Whisper"))
    assert whisper.endswith("| – | – | 50 ms | 50 ms |")  # the mesh cannot time Whisper alone
    first = next(line for line in lines if "first audio at the client" in line)
    assert "| 900 ms | 990 ms | 600 ms | 690 ms |" in first
    assert lines[-1] == "| ratio mesh / in-process, first audio | | 1.50 | 1.43 | | |"
    assert not any("LLM" in line for line in lines)  # stages nobody measured are left out
    assert format_ms(None, "p50") == "–"


def test_summary_lists_failures() -> None:
    mesh = [_turn("mesh", 0, 800.0), _turn("mesh", 1, 0.0, error="no reply within 60 s")]
    run = Run("voxmesh bench latency", "ws://x/v1/realtime", 2, 1, ["q"], mesh, [], load_average="1.0")
    text = summary(run)
    assert "mesh 1/2 ok" in text and "busy cores: 1" in text
    assert "mesh turn 2 ('What is the capital of France?'): no reply within 60 s" in text


def test_summary_compares_the_transports_when_both_ran() -> None:
    mesh = [_turn("mesh", i, ms) for i, ms in enumerate((800.0, 900.0))]
    webrtc = [_turn("mesh-webrtc", i, ms) for i, ms in enumerate((880.0, 990.0))]
    run = Run("voxmesh bench latency --transport both", "ws://x/v1/realtime", 2, 0, ["q"], mesh, [])
    run.webrtc = webrtc
    text = summary(run)
    assert "mesh 2/2 ok; mesh over WebRTC 2/2 ok" in text
    row = next(line for line in text.splitlines() if "first audio at the client" in line and "1.10" in line)
    assert "| 850 ms | 895 ms | 935 ms | 984 ms | 1.10 | 1.10 |" in row, row
    assert '"mesh-webrtc"' in to_json(run) and '"summary_webrtc"' in to_json(run)


# ---- busy cores


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_busy_cores_start_and_always_stop() -> None:
    with busy_cores(2) as pids:
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)


def test_busy_cores_stop_when_the_block_fails() -> None:
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), busy_cores(1) as started:
        pids.extend(started)
        raise KeyboardInterrupt
    assert pids and not any(_alive(pid) for pid in pids)


def test_the_pause_summary_counts_one_turn_answers_and_names_the_rest() -> None:
    from clients.bench.pauses import PauseResult
    from clients.bench.report import pause_summary

    pauses = [
        PauseResult("a … b", turns=1, first_audio_ms=700.0),
        PauseResult("c … d", turns=2, first_audio_ms=650.0),
        PauseResult("e … f", error="no reply within 60 s"),
        PauseResult("g … h", turns=1, first_audio_ms=900.0),
    ]
    text = pause_summary(pauses)
    assert "2/4 (50 %) kept as one turn" in text
    assert "p50 800 ms" in text
    assert "'c … d' (2 turns)" in text and "'e … f' (no reply within 60 s)" in text
