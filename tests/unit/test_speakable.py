"""The normalizer between the LLM and TTS: what reaches the voice has no symbols to read out."""

from __future__ import annotations

import re

import pytest

from services.tts.speakable import speakable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        # markdown
        ("**Paris** is the *capital* of France.", "Paris is the capital of France."),
        ("~~old~~ new", "old new"),
        ("# Moon facts\nIt has no air.", "Moon facts. It has no air."),
        ("- Apples\n- Pears\n* Plums", "Apples. Pears. Plums"),
        ("1. Preheat the oven.\n2) Bake it.", "Preheat the oven. Bake it."),
        ("> quoted text", "quoted text"),
        ("Run `make test` first.", "Run make test first."),
        ("Here:\n```python\nprint('hi')\n```\nThat prints hi.", "Here: That prints hi."),
        ("Read [the guide](https://example.com/guide) first.", "Read the guide first."),
        ("snake_case_name is _fine_", "snake case name is fine"),
        ("| city | sun |\n|---|---|\n| Oslo | 6 h |", "city, sun. Oslo, six h"),
        # links, addresses, paths
        ("See https://www.example.com/docs?x=1.", "See a link to example dot com."),
        ("Visit www.python.org today", "Visit a link to python dot org today"),
        ("Write to joe@example.com.", "Write to an email address."),
        ("Edit /etc/voxmesh/config.yaml now", "Edit a file path now"),
        ("Open C:\\Users\\joe\\notes.txt", "Open a file path"),
        # numbers, times, currencies, units
        ("It costs $5.50.", "It costs five dollars and fifty cents."),
        ("About €20 or £3.", "About twenty euros or three pounds."),
        ("A $3 million house.", "A three million dollars house."),
        ("Only USD 12 today.", "Only twelve dollars today."),
        ("Meet at 3:30 pm.", "Meet at three thirty p m."),
        ("Meet at 9:05.", "Meet at nine oh five."),
        ("Lunch at 12:00.", "Lunch at twelve o'clock."),
        ("At 3 p.m. we go.", "At three p m we go."),
        ("It is 21°C and 70°F.", "It is twenty-one degrees Celsius and seventy degrees Fahrenheit."),
        ("Wind at 15 km/h, 1 km away.", "Wind at fifteen kilometres per hour, one kilometre away."),
        ("Save 50% now.", "Save fifty percent now."),
        ("The 2nd and the 21st.", "The second and the twenty-first."),
        ("In 1999 there were 1,234,567 people.",
         "In nineteen ninety-nine there were one million two hundred and thirty-four thousand five hundred"
         " and sixty-seven people."),
        ("Pi is 3.14.", "Pi is three point one four."),
        ("It has 42 moons.", "It has forty-two moons."),
        # abbreviations and symbols
        ("Dr. Smith vs. Mr. Jones", "Doctor Smith versus Mister Jones"),
        ("Fruit, e.g. apples, etc.", "Fruit, for example apples, et cetera"),
        ("Salt & pepper", "Salt and pepper"),
        ("2+2=4", "two plus two equals four"),
        # emoji
        ("Good night 🌙!", "Good night!"),
        ("👋 Hi there", "Hi there"),
    ],
)  # fmt: skip
def test_written_forms_become_words(written: str, spoken: str) -> None:
    assert speakable(written) == spoken


def test_plain_sentences_pass_unchanged() -> None:
    for text in ["The moon has no air.", "Hello! How are you today?", "Yes, of course; that is fine."]:
        assert speakable(text) == text


def test_nothing_a_voice_would_read_as_a_symbol_survives() -> None:
    reply = (
        "## Answer 🚀\n**Sure!** Here's how:\n1. Go to https://x.io/a/b\n2. Run `ls -la /tmp/x`\n"
        "- Cost: $1,200.75 (about 12% more) at 10:30 am\n> Note: see [docs](http://d.io) & /var/log/y.log"
    )
    spoken = speakable(reply)
    assert not re.search(r"[*_#`\[\]<>|/\\@&%$€£°\d]", spoken), spoken
    assert "one thousand two hundred dollars and seventy-five cents" in spoken
    assert "ten thirty a m" in spoken


def test_empty_and_symbol_only_phrases_become_empty() -> None:
    assert speakable("") == ""
    assert speakable("🙂 **") == ""
