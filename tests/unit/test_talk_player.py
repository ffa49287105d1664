"""The talk client's player model: real-time playback from the first frame, underruns, stopping."""

from __future__ import annotations

import pytest

from clients.talk import Player

pytestmark = pytest.mark.unit


def test_player_plays_at_real_time_from_the_first_frame() -> None:
    player = Player(16000, started_at=10.0)
    player.feed(bytes(32000), 10.0)  # 1 s arrives at once, faster than real time
    assert player.position_ms(10.25) == pytest.approx(250)
    assert player.finishes_at() is None  # more may come until audio.end
    player.end(10.5)
    assert player.finishes_at() == pytest.approx(11.0)
    assert not player.played_out(10.99) and player.played_out(11.0)
    assert player.position_ms(12.0) == pytest.approx(1000)


def test_player_waits_when_the_buffer_runs_dry() -> None:
    player = Player(16000, started_at=0.0)
    player.feed(bytes(3200), 0.0)  # 100 ms
    assert player.position_ms(0.5) == pytest.approx(100)  # underrun: the playhead waits
    player.feed(bytes(3200), 0.5)  # the next 100 ms plays from 0.5 s on
    assert player.underruns == 1
    assert player.position_ms(0.55) == pytest.approx(150)
    player.end(0.55)
    assert player.finishes_at() == pytest.approx(0.6)


def test_player_stop_freezes_the_position() -> None:
    player = Player(24000, started_at=1.0)
    player.feed(bytes(48000), 1.0)  # 1 s at 24 kHz
    assert player.stop(1.3) == pytest.approx(300)
    player.feed(bytes(48000), 1.4)  # late audio of a stopped reply is not played
    assert player.position_ms(5.0) == pytest.approx(300)
    assert player.stop(2.0) == pytest.approx(300)
