"""`near_misses`: the endings Whisper nearly wrote, from its per-step token probabilities (toy tokens)."""

from __future__ import annotations

import pytest

from services.asr.engine import ENDING_FLOOR, near_misses

pytestmark = pytest.mark.unit

PIECES = {1: " Send", 2: " an", 3: " email", 4: " too", 5: "?", 6: " to", 7: ",", 8: " tool", 9: "...",
          10: " land", 11: "lord", 12: "'s", 13: " mine", 14: " my", 15: "."}  # fmt: skip
EOT = 99


def decode(tokens: list[int]) -> str:
    return "".join(PIECES.get(token, "") for token in tokens)


def misses(tokens: list[int], table: dict[int, list[tuple[int, float]]]) -> tuple[tuple[str, float], ...]:
    """`near_misses` over a table of each step's likely tokens (a step missing has none)."""
    return near_misses(tokens, lambda step: table.get(step, []), decode, EOT)


def test_the_last_word_and_the_mark_after_it_are_swapped_for_the_tokens_nearly_chosen() -> None:
    tokens = [1, 2, 3, 4, 5]  # " Send an email too?"
    probabilities = {
        1: [(2, 0.7), (6, 0.3)],  # an earlier word's doubt is not the ending's
        2: [(3, 0.6), (8, 0.4)],
        3: [(4, 0.6), (6, 0.3), (7, 0.05), (8, ENDING_FLOOR / 2)],
        4: [(5, 0.7), (9, 0.2), (EOT, 0.1)],
        5: [(EOT, 1.0)],
    }
    # The comma at the last word is left out: a mark there is Whisper weighing where a pause goes.
    assert misses(tokens, probabilities) == (
        ("Send an email to", 0.3),
        ("Send an email too...", 0.2),
        ("Send an email too", 0.1),
    )


def test_a_word_of_several_tokens_is_swapped_from_its_first() -> None:
    tokens = [1, 14, 10, 11, 12, 15]  # " Send my landlord's."
    probabilities = {2: [(10, 0.5), (13, 0.4)], 5: [(15, 0.5), (EOT, 0.3)]}
    assert misses(tokens, probabilities) == (
        ("Send my mine", 0.4),
        ("Send my landlord's", 0.3),
    )


def test_without_a_closing_mark_the_end_of_text_step_is_read() -> None:
    tokens = [1, 2, 3, 4]  # " Send an email too" and the end of the text
    probabilities = {3: [(4, 0.9)], 4: [(EOT, 0.7), (9, 0.25)]}
    assert misses(tokens, probabilities) == (("Send an email too...", 0.25),)


def test_no_words_no_near_misses() -> None:
    assert misses([], {0: [(4, 0.5)]}) == ()
    assert misses([5], {0: [(5, 0.5), (6, 0.5)]}) == ()


def test_a_mark_just_before_the_last_word_is_part_of_the_ending() -> None:
    tokens = [1, 2, 3, 7, 4, 15]  # " Send an email, too."
    probabilities = {
        2: [(3, 0.9), (8, 0.1)],
        3: [(7, 0.4), (6, 0.3)],
        4: [(4, 0.9), (6, 0.05)],
        5: [(15, 1.0)],
    }
    assert misses(tokens, probabilities) == (
        ("Send an email to", 0.3),
        ("Send an email, to", 0.05),
    )
