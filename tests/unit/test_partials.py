"""LocalAgreement: only words two successive decodes agree on are shown, and they never change."""

from __future__ import annotations

import pytest

from services.asr.partials import LocalAgreement

pytestmark = pytest.mark.unit


def test_commits_the_prefix_two_hypotheses_share() -> None:
    agreement = LocalAgreement()
    assert agreement.update("What is") is None, "one hypothesis alone is never trusted"
    assert agreement.update("What is the capital") == "What is"
    assert agreement.update("What is the capital of fr") == "What is the capital"
    assert agreement.update("What is the capital of France?") == "What is the capital of"


def test_case_and_punctuation_do_not_break_agreement() -> None:
    agreement = LocalAgreement()
    agreement.update("what is the")
    assert agreement.update("What is, the capital") == "What is, the"


def test_committed_words_are_kept_when_a_later_decode_revises_them() -> None:
    agreement = LocalAgreement()
    agreement.update("The weather is")
    assert agreement.update("The weather is nice") == "The weather is"
    assert agreement.update("The whether is nice today") is None, "a revision never shrinks what is shown"
    assert agreement.committed == ["The", "weather", "is"]


def test_reset_starts_a_new_utterance() -> None:
    agreement = LocalAgreement()
    agreement.update("Hello there")
    agreement.update("Hello there friend")
    agreement.reset()
    assert agreement.update("Good morning") is None
    assert agreement.update("Good morning everyone") == "Good morning"


def test_words_once_shown_keep_their_spelling() -> None:
    agreement = LocalAgreement()
    agreement.update("the lazy dog")
    assert agreement.update("the lazy dog and") == "the lazy dog"
    assert agreement.update("The lazy dog, and runs") == "the lazy dog and"
