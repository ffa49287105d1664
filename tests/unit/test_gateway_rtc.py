"""The gateway's WebRTC pieces on their own: the reply track (queue, clear, what was played, pacing), the
offer checks, and the port-range settings."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from services.gateway.rtc_media import TRACK_RATE, ReplyAudioTrack
from services.gateway.rtc_offer import OfferRefused, check_offer, parse_offer
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

_OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendrecv",
    "a=rtpmap:111 opus/48000/2",
    "m=application 9 DTLS/SCTP 5000", "c=IN IP4 0.0.0.0", "a=mid:1",
    "a=sctpmap:5000 webrtc-datachannel 65535",
    "",
])  # fmt: skip


@pytest.fixture
def played() -> list[tuple[int, float]]:
    return []


@pytest.fixture
def track(played: list[tuple[int, float]]) -> Iterator[ReplyAudioTrack]:
    reply = ReplyAudioTrack(lambda turn, ms: played.append((turn, ms)))
    yield reply
    reply.stop()


def _tone(ms: int, rate: int = TRACK_RATE) -> bytes:
    samples = np.arange(rate * ms // 1000)
    pcm: bytes = (np.sin(samples * 0.05) * 8000).astype("<i2").tobytes()
    return pcm


async def _frames(track: ReplyAudioTrack, count: int) -> list[bytes]:
    return [bytes((await track.recv()).planes[0])[: 960 * 2] for _ in range(count)]


async def test_a_turn_plays_in_order_then_silence_and_its_end_is_reported(
    track: ReplyAudioTrack, played: list[tuple[int, float]]
) -> None:
    track.begin(3, TRACK_RATE)
    assert track.add(_tone(50))
    frames = await _frames(track, 2)
    assert all(any(frame) for frame in frames)
    assert played == []  # more of turn 3 may come
    track.end(3)
    frames = await _frames(track, 3)
    assert any(frames[0]) and not any(frames[-1])  # its last 10 ms, then silence
    assert len(played) == 1 and played[0][0] == 3 and abs(played[0][1] - 50.0) < 0.5
    assert track.audio_frames_sent == 3


async def test_clear_drops_what_was_not_played_and_says_how_much_was(
    track: ReplyAudioTrack, played: list[tuple[int, float]]
) -> None:
    track.begin(1, 16_000)  # resampled to the track's rate
    track.add(_tone(2000, 16_000))
    await _frames(track, 5)
    assert track.clear(1) == pytest.approx(100.0, abs=0.5)
    assert track.queued_bytes() == 0
    assert not any(b"".join(await _frames(track, 2)))
    assert track.clear(1) is None  # nothing of it left
    assert played == []  # a cleared turn is reported by whoever cleared it


async def test_audio_without_a_turn_or_after_its_end_is_dropped(track: ReplyAudioTrack) -> None:
    assert not track.add(_tone(20))
    track.begin(1, TRACK_RATE)
    assert not track.end(2)  # not a turn the track holds
    assert track.end(1)
    assert not track.add(_tone(20))


async def test_frames_come_in_real_time(track: ReplyAudioTrack) -> None:
    await track.recv()
    started = time.monotonic()
    await _frames(track, 10)
    # Pacing, not speed: ten 20 ms frames cannot all come at once (a generous lower bound only).
    assert time.monotonic() - started >= 0.15


def test_offers_without_media_microphone_or_data_channel_are_refused() -> None:
    check_offer(_OFFER)
    cases = {
        "v=0\r\ngarbage": "bad_sdp",
        "not sdp at all": "bad_sdp",
        _OFFER.replace("a=sendrecv", "a=recvonly"): "no_audio",
        _OFFER.replace("m=audio", "m=video"): "no_audio",
        _OFFER.split("m=application")[0]: "no_data_channel",
    }
    for sdp, code in cases.items():
        with pytest.raises(OfferRefused) as refused:
            check_offer(sdp)
        assert (refused.value.status, refused.value.code) == (400, code), sdp


def test_the_offer_body_must_be_an_offer() -> None:
    assert parse_offer(b'{"type": "offer", "sdp": "v=0"}').sdp == "v=0"
    for body in (b"nope", b"[]", b'{"type": "answer", "sdp": "v=0"}', b'{"type": "offer", "sdp": 3}'):
        with pytest.raises(OfferRefused) as refused:
            parse_offer(body)
        assert refused.value.code == "bad_offer"


def test_the_port_range_is_both_bounds_or_neither(clean_voxmesh_env: None) -> None:
    assert GatewaySettings().webrtc_ports() is None
    assert GatewaySettings(webrtc_port_min=40000, webrtc_port_max=40009).webrtc_ports() == range(40000, 40010)
    with pytest.raises(ValidationError):
        GatewaySettings(webrtc_port_min=40000)
    with pytest.raises(ValidationError):
        GatewaySettings(webrtc_port_min=40010, webrtc_port_max=40000)
