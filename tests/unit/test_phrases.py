"""PhraseChunker: where a token stream is cut into phrases for TTS."""

from __future__ import annotations

import pytest

from services.llm.phrases import PhraseChunker

pytestmark = pytest.mark.unit


def chunk(text: str, step: int | None = None, **options: int) -> list[str]:
    """Feed `text` in pieces of `step` characters (all at once when None) and flush."""
    chunker = PhraseChunker(**options)
    size = step or max(1, len(text))
    phrases: list[str] = []
    for start in range(0, len(text), size):
        phrases += chunker.push(text[start : start + size])
    return phrases + chunker.flush()


def test_first_phrase_ends_early_at_a_comma_after_four_words() -> None:
    chunker = PhraseChunker()
    assert chunker.push("Paris is the capital of France,") == []  # is a space coming, or "1,000"?
    assert chunker.push(" and it is lovely, really.") == ["Paris is the capital of France,"]
    # Only the first phrase is cut at a clause; later ones wait for the sentence end.
    assert chunker.flush() == ["and it is lovely, really."]


def test_no_early_cut_before_four_words() -> None:
    assert chunk("Sure, I can help. Yes, of course it is fine.") == [
        "Sure, I can help.",
        "Yes, of course it is fine.",
    ]
    assert chunk("One two three, four five.") == ["One two three, four five."]
    assert chunk("One two three four, five.") == ["One two three four,", "five."]


def test_other_clause_marks_end_the_first_phrase() -> None:
    assert chunk("Here is what I found: it works.") == ["Here is what I found:", "it works."]
    assert chunk("Here is the thing I mean—it works.") == ["Here is the thing I mean—", "it works."]


def test_sentence_ends() -> None:
    text = "Hello there! How are you? I am fine… Thanks. Bye"
    assert chunk(text) == ["Hello there!", "How are you?", "I am fine…", "Thanks.", "Bye"]


def test_sentence_end_needs_whitespace_or_end_of_stream() -> None:
    chunker = PhraseChunker()
    assert chunker.push("It is done.") == []
    assert chunker.push(" Next") == ["It is done."]
    assert chunker.flush() == ["Next"]
    assert chunk("It is done.") == ["It is done."]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert chunk('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_decimals_are_not_split() -> None:
    assert chunk("Pi is about 3.14 and e is 2.718 roughly. Next.") == [
        "Pi is about 3.14 and e is 2.718 roughly.",
        "Next.",
    ]


def test_abbreviations_are_not_sentence_ends() -> None:
    text = "Mr. Smith met Dr. Jones in the U.S. last year. They ate fruit, e.g. apples. Done."
    assert chunk(text, first_min_words=99) == [
        "Mr. Smith met Dr. Jones in the U.S. last year.",
        "They ate fruit, e.g. apples.",
        "Done.",
    ]


def test_newline_ends_a_phrase() -> None:
    assert chunk("First line\nSecond line") == ["First line", "Second line"]


def test_flush_returns_the_remainder_and_resets() -> None:
    chunker = PhraseChunker()
    assert chunker.push("The answer is 42. And then") == ["The answer is 42."]
    assert chunker.flush() == ["And then"]
    assert chunker.flush() == []
    # A new reply gets the early first cut again.
    assert chunker.push("Paris is the capital of France, ") == ["Paris is the capital of France,"]


def test_long_phrase_is_split_at_the_last_space() -> None:
    text = " ".join(["word"] * 30) + "."
    phrases = chunk(text, max_chars=40, first_min_words=99, first_max_words=99)
    assert all(len(p) <= 40 for p in phrases)
    assert " ".join(phrases) == text
    assert phrases[0] == " ".join(["word"] * 8)


def test_first_phrase_without_punctuation_is_cut_after_ten_words() -> None:
    long_sentence = (
        "The moon is a mysterious and fascinating celestial body that has captivated humans for ages."
    )
    phrases = chunk(long_sentence + " It shines.")
    assert phrases[0] == "The moon is a mysterious and fascinating celestial body that"
    assert phrases[1:] == ["has captivated humans for ages.", "It shines."], "later phrases are sentences"


def test_the_tenth_word_is_cut_only_once_it_is_complete() -> None:
    chunker = PhraseChunker()
    assert chunker.push("one two three four five six seven eight nine te") == []
    assert chunker.push("n eleven") == ["one two three four five six seven eight nine ten"]


def test_a_word_longer_than_max_chars_is_cut_hard() -> None:
    assert chunk("x" * 25, max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_markdown_is_stripped() -> None:
    text = "## Facts\n- **Paris** is the `capital`.\n* Lyon is *big*.\n> quoted"
    assert chunk(text) == ["Facts", "Paris is the capital.", "Lyon is big.", "quoted"]


def test_bold_sentence_end_is_found() -> None:
    assert chunk("**It is Paris.** Next one.") == ["It is Paris.", "Next one."]


def test_phrases_without_letters_or_digits_are_dropped() -> None:
    assert chunk("Hello.\n---\n***\n...\nBye.") == ["Hello.", "Bye."]


def test_numbered_list_marker_does_not_end_a_phrase() -> None:
    assert chunk("1. Paris\n2. Lyon") == ["1. Paris", "2. Lyon"]


TEXTS = [
    "Sure, I can help with that. The capital of France is Paris, a city of 2.1 million people.",
    "Mr. Smith lives in the U.S. with his dog! Isn't that nice? Well—yes.\n\n- **Item** one\n- item two",
    "Here is a long answer, with clauses; and more: " + "blah " * 60 + "end. Final words...",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 13])
def test_split_deltas_give_the_same_phrases_as_one_push(text: str, step: int) -> None:
    assert chunk(text, step) == chunk(text)
    assert chunk(text, step, max_chars=50) == chunk(text, max_chars=50)
