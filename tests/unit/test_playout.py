"""ReplyAssembler: reply audio leaves in phrase order, whatever order the TTS replicas finish in."""

from __future__ import annotations

import pytest

from services.gateway.playout import ReplyAssembler

pytestmark = pytest.mark.unit


def test_in_order_chunks_are_released_at_once() -> None:
    reply = ReplyAssembler(turn_id=4)
    assert reply.turn_id == 4
    assert reply.add_chunk(0, 0, b"a") == [b"a"]
    assert reply.add_chunk(0, 1, b"b") == [b"b"]
    assert reply.phrase_done(0, 2) == []
    assert reply.add_chunk(1, 0, b"c") == [b"c"]
    assert reply.phrase_done(1, 1) == []
    reply.reply_done(2)
    assert reply.complete


def test_later_phrase_is_held_until_the_earlier_one_completes() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(1, 0, b"p1c0") == []
    assert reply.add_chunk(1, 1, b"p1c1") == []
    assert reply.phrase_done(1, 2) == []
    assert not reply.started
    assert reply.add_chunk(0, 0, b"p0c0") == [b"p0c0"]
    assert reply.started
    # Phrase 0's length is not known yet, so phrase 1 still waits.
    assert reply.add_chunk(0, 1, b"p0c1") == [b"p0c1"]
    assert reply.phrase_done(0, 2) == [b"p1c0", b"p1c1"]
    reply.reply_done(2)
    assert reply.complete


def test_whole_reply_arriving_backwards_comes_out_in_order() -> None:
    reply = ReplyAssembler(turn_id=1)
    reply.reply_done(3)
    out: list[bytes] = []
    for phrase in (2, 1, 0):
        out += reply.phrase_done(phrase, 2)
        for chunk in (1, 0):
            out += reply.add_chunk(phrase, chunk, f"{phrase}.{chunk}".encode())
    assert out == [b"0.0", b"0.1", b"1.0", b"1.1", b"2.0", b"2.1"]
    assert reply.complete


def test_out_of_order_chunks_within_a_phrase() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(0, 2, b"c") == []
    assert reply.add_chunk(0, 1, b"b") == []
    assert not reply.started
    assert reply.add_chunk(0, 0, b"a") == [b"a", b"b", b"c"]
    assert reply.phrase_done(0, 3) == []
    reply.reply_done(1)
    assert reply.complete


def test_phrase_done_before_its_chunks() -> None:
    reply = ReplyAssembler(turn_id=1)
    reply.reply_done(1)
    assert reply.phrase_done(0, 2) == []
    assert not reply.complete
    assert reply.add_chunk(0, 1, b"b") == []
    assert reply.add_chunk(0, 0, b"a") == [b"a", b"b"]
    assert reply.complete


def test_duplicate_after_release_is_dropped() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(0, 0, b"a") == [b"a"]
    assert reply.add_chunk(0, 0, b"a") == []
    assert reply.add_chunk(0, 1, b"b") == [b"b"]
    assert reply.add_chunk(0, 0, b"again") == []
    assert reply.phrase_done(0, 2) == []


def test_duplicate_while_buffered_keeps_the_first_copy() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(1, 0, b"first") == []
    assert reply.add_chunk(1, 0, b"second") == []
    assert reply.add_chunk(0, 1, b"x1") == []
    assert reply.add_chunk(0, 1, b"x1-dup") == []
    assert reply.add_chunk(0, 0, b"x0") == [b"x0", b"x1"]
    assert reply.phrase_done(0, 2) == [b"first"]
    assert reply.phrase_done(1, 1) == []


def test_duplicate_phrase_done_and_reply_done_keep_the_first_count() -> None:
    reply = ReplyAssembler(turn_id=1)
    reply.reply_done(1)
    reply.reply_done(5)
    assert reply.phrase_done(0, 1) == []
    assert reply.phrase_done(0, 3) == []
    assert reply.add_chunk(0, 0, b"a") == [b"a"]
    assert reply.complete


def test_chunks_of_a_completed_phrase_are_ignored() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(0, 0, b"a") == [b"a"]
    assert reply.phrase_done(0, 1) == []
    assert reply.add_chunk(0, 0, b"a") == []
    assert reply.add_chunk(0, 5, b"late") == []
    # Nothing from phrase 0 leaks into phrase 1.
    assert reply.add_chunk(1, 0, b"b") == [b"b"]
    assert reply.phrase_done(1, 1) == []


def test_extra_chunk_beyond_the_count_is_never_released() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(0, 2, b"extra") == []
    assert reply.phrase_done(0, 1) == []
    assert reply.add_chunk(0, 0, b"a") == [b"a"]
    assert reply.add_chunk(1, 0, b"b") == [b"b"]


def test_zero_chunk_phrases_are_skipped() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert reply.add_chunk(2, 0, b"two") == []
    assert reply.phrase_done(1, 0) == []
    assert reply.phrase_done(2, 1) == []
    assert reply.phrase_done(0, 0) == [b"two"]
    reply.reply_done(3)
    assert reply.complete


def test_reply_of_only_silent_phrases_completes_without_starting() -> None:
    reply = ReplyAssembler(turn_id=1)
    reply.reply_done(2)
    reply.phrase_done(0, 0)
    reply.phrase_done(1, 0)
    assert reply.complete
    assert not reply.started


def test_empty_reply_is_complete_at_once() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert not reply.complete
    reply.reply_done(0)
    assert reply.complete
    assert not reply.started


def test_not_complete_until_reply_done_even_if_phrases_are_out() -> None:
    reply = ReplyAssembler(turn_id=1)
    reply.add_chunk(0, 0, b"a")
    reply.phrase_done(0, 1)
    assert not reply.complete
    reply.reply_done(2)
    assert not reply.complete
    reply.add_chunk(1, 0, b"b")
    assert not reply.complete
    reply.phrase_done(1, 1)
    assert reply.complete


def test_started_only_once_audio_is_released() -> None:
    reply = ReplyAssembler(turn_id=1)
    assert (reply.started, reply.announced, reply.ended) == (False, False, False)
    reply.phrase_done(0, 1)
    reply.add_chunk(1, 0, b"held")
    assert not reply.started  # nothing has gone out yet
    reply.add_chunk(0, 0, b"a")
    assert reply.started
