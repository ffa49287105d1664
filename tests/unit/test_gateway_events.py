"""The gateway's client-facing edges: text events, the audio rate limit, and the origin check."""

from __future__ import annotations

import pytest

from services.gateway.access import origin_allowed
from services.gateway.events import (
    AudioPlayed,
    ClientEventError,
    Ping,
    ResponseCancel,
    SessionClose,
    SessionUpdate,
    SessionUsageRequest,
    error_event,
    parse_client_event,
)
from services.gateway.ratelimit import TokenBucket

pytestmark = pytest.mark.unit


# --- client events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "ping"}', Ping),
        ('{"type": "response.cancel"}', ResponseCancel),
        ('{"type": "session.close"}', SessionClose),
        ('  {"type": "ping", "event_id": "abc", "extra": [1, 2]}  ', Ping),
    ],
)
def test_valid_events(text: str, expected: type[object]) -> None:
    assert type(parse_client_event(text)) is expected


def _error(text: str) -> ClientEventError:
    with pytest.raises(ClientEventError) as info:
        parse_client_event(text)
    return info.value


@pytest.mark.parametrize(
    "text",
    ["{", "", "not json", "[]", '["ping"]', "null", '"ping"', "5", "{}", '{"type": 5}', '{"type": null}'],
)
def test_bad_json(text: str) -> None:
    error = _error(text)
    assert error.code == "bad_json"
    assert error.message == str(error)
    assert error.message


def test_audio_played_and_session_update_parse() -> None:
    played = parse_client_event('{"type": "audio.played", "turn_id": 3, "played_ms": 1250.5}')
    assert isinstance(played, AudioPlayed) and (played.turn_id, played.played_ms) == (3, 1250.5)
    update = parse_client_event(
        '{"type": "session.update", "session": {"output_sample_rate": 24000, "instructions": "Be brief."}}'
    )
    assert isinstance(update, SessionUpdate)
    assert (update.session.output_sample_rate, update.session.instructions) == (24000, "Be brief.")
    partial = parse_client_event('{"type": "session.update", "session": {}}')
    assert isinstance(partial, SessionUpdate) and partial.session.output_sample_rate is None
    assert partial.session.economy is None, "left out: the session keeps its mode"
    economy = parse_client_event('{"type": "session.update", "session": {"economy": true}}')
    assert isinstance(economy, SessionUpdate) and economy.session.economy is True
    assert isinstance(parse_client_event('{"type": "session.usage"}'), SessionUsageRequest)


def test_instructions_over_the_limit_are_refused_with_the_limit_named() -> None:
    text = '{"type": "session.update", "session": {"instructions": "' + "x" * 2001 + '"}}'
    error = _error(text)
    assert error.code == "invalid_session_update"
    assert "instructions" in error.message and "2000 characters" in error.message


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type": "audio.played", "turn_id": 1, "played_ms": -5}', "bad_event"),
        ('{"type": "audio.played", "turn_id": 1}', "bad_event"),
        ('{"type": "audio.played", "turn_id": "x", "played_ms": 5}', "bad_event"),
        ('{"type": "session.update"}', "invalid_session_update"),
        ('{"type": "session.update", "session": {"output_sample_rate": 100}}', "invalid_session_update"),
        ('{"type": "session.update", "session": {"output_sample_rate": "24000"}}', "invalid_session_update"),
        ('{"type": "session.update", "session": {"voice": "alloy"}}', "invalid_session_update"),
        (
            '{"type": "session.update", "session": {"instructions": "' + "x" * 2001 + '"}}',
            "invalid_session_update",
        ),
        ('{"type": "session.update", "session": [1]}', "invalid_session_update"),
        ('{"type": "session.update", "session": {"economy": "yes"}}', "invalid_session_update"),
    ],
)
def test_known_event_with_bad_fields_gets_its_own_code(text: str, code: str) -> None:
    error = _error(text)
    assert error.code == code
    assert "x" * 50 not in error.message, "the client's values are not echoed back"


@pytest.mark.parametrize("text", ['{"type": "nope"}', '{"type": ""}', '{"type": "PING"}'])
def test_unknown_event(text: str) -> None:
    error = _error(text)
    assert error.code == "unknown_event"
    assert "unknown event type" in error.message


def test_unknown_event_names_the_type() -> None:
    assert "'nope'" in _error('{"type": "nope"}').message


def test_huge_type_is_truncated_in_the_message() -> None:
    error = _error('{"type": "%s"}' % ("x" * 100_000))
    assert error.code == "unknown_event"
    assert "x" * 64 in error.message
    assert "x" * 65 not in error.message
    assert len(error.message) < 200


def test_deeply_nested_json_is_bad_json() -> None:
    assert _error("[" * 100_000).code == "bad_json"


def test_error_event() -> None:
    assert error_event("bad_json", "nope") == {"type": "error", "code": "bad_json", "message": "nope"}
    assert error_event("llm_failed", "boom", turn_id=3) == {
        "type": "error",
        "code": "llm_failed",
        "message": "boom",
        "turn_id": 3,
    }
    assert error_event("x", "y", turn_id=0)["turn_id"] == 0


# --- rate limit ----------------------------------------------------------------------------

RATE = 32_000  # 16 kHz s16le mono: bytes per second of real-time audio
FRAME = 640  # 20 ms
FRAME_S = 0.02


class FakeClock:
    """Stands in for time.monotonic."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # Patched where ratelimit looks it up (the `time` module attribute), for this test only.
    monkeypatch.setattr("services.gateway.ratelimit.time.monotonic", fake)
    return fake


def test_real_time_audio_always_passes(clock: FakeClock) -> None:
    bucket = TokenBucket(RATE, burst_s=0.5)
    for _ in range(3000):  # one minute
        assert bucket.take(FRAME)
        clock.now += FRAME_S


def test_twice_real_time_is_refused_after_the_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(RATE, burst_s=1.0)
    accepted = 0
    refused = 0
    for _ in range(1000):  # 10 s of wall time, 20 s of audio
        if bucket.take(FRAME):
            accepted += 1
        else:
            refused += 1
        clock.now += FRAME_S / 2
    assert refused > 0
    # Over 10 s the bucket lets through the 1 s burst plus 10 s of real-time audio, no more.
    assert accepted * FRAME <= RATE * (1.0 + 10.0) + FRAME
    assert accepted * FRAME >= RATE * 10.0
    # The first second's worth (the burst) goes through without refusal.
    fresh = TokenBucket(RATE, burst_s=1.0)
    for _ in range(RATE // FRAME):
        assert fresh.take(FRAME)
    assert not fresh.take(FRAME)


def test_refills_over_time_up_to_the_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(1000, burst_s=2.0)
    assert bucket.capacity == 2000
    assert bucket.take(2000)
    assert not bucket.take(1)
    clock.now += 0.5
    assert bucket.take(500)
    assert not bucket.take(1)
    clock.now += 3600  # a long pause refills only to capacity
    assert bucket.take(2000)
    assert not bucket.take(1)


def test_refused_take_spends_nothing(clock: FakeClock) -> None:
    bucket = TokenBucket(1000, burst_s=1.0)
    assert not bucket.take(1001)  # bigger than the whole burst
    assert bucket.take(1000)


# --- origin check --------------------------------------------------------------------------


def test_no_origin_is_allowed() -> None:
    assert origin_allowed(None, "gw.example.com", [])
    assert origin_allowed(None, None, [])


def test_same_host_is_allowed_when_the_host_is_one_of_ours() -> None:
    assert origin_allowed("https://gw.example.com", "gw.example.com", [], ["gw.example.com"])
    assert origin_allowed("http://localhost:8000", "localhost:8000", [])
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", [])
    assert origin_allowed("http://[::1]:8000", "[::1]:8000", [])
    assert origin_allowed("https://GW.example.com", "gw.EXAMPLE.com", [], ["gw.example.com"])


def test_dns_rebinding_page_is_refused() -> None:
    # evil.example resolves to 127.0.0.1: same origin as far as the browser knows, but not our host name.
    assert not origin_allowed("http://evil.example:8000", "evil.example:8000", [])
    assert not origin_allowed("https://gw.example.com", "gw.example.com", [])


def test_different_host_is_refused() -> None:
    assert not origin_allowed("https://evil.example", "gw.example.com", [], ["gw.example.com"])
    assert not origin_allowed("http://localhost:9999", "localhost:8000", [])
    assert not origin_allowed("https://gw.example.com.evil.example", "gw.example.com", [], ["gw.example.com"])
    assert not origin_allowed("https://gw.example.com", None, [], ["gw.example.com"])
    assert not origin_allowed("null", "gw.example.com", [], ["gw.example.com"])


def test_allow_list() -> None:
    allowed = ["https://app.example.com"]
    assert origin_allowed("https://app.example.com", "gw.example.com", allowed, ["gw.example.com"])
    assert not origin_allowed("https://other.example.com", "gw.example.com", allowed, ["gw.example.com"])
    assert not origin_allowed("http://app.example.com", "gw.example.com", allowed, ["gw.example.com"])
    # The allowed origins' own hosts are ours: the page may be served by the gateway under that name.
    assert origin_allowed("https://app.example.com", "app.example.com", allowed)
    assert not origin_allowed("https://app.example.com", "evil.example", allowed)


def test_star_allows_any_origin_but_not_any_host() -> None:
    assert origin_allowed("https://anything.example", "gw.example.com", ["*"], ["gw.example.com"])
    assert origin_allowed("null", "localhost:8000", ["*"])
    assert not origin_allowed("https://anything.example", "anything.example", ["*"])
    assert origin_allowed("https://anything.example", "anything.example", ["*"], ["*"])
