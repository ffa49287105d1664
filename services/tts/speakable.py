"""Text an LLM writes → text a voice can say: no markdown, code, links, paths or emoji read out as symbols;
numbers, times, currencies, units and common abbreviations written as words.

The reply the user reads keeps the model's text; only what is synthesized goes through `speakable`.
Each rule is a regular expression over one phrase, applied in order (markup first, then the forms that
contain digits, then bare numbers, then leftover symbols).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import emoji
from num2words import num2words  # type: ignore[import-untyped]

_Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]

_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence")}  # fmt: skip
_CURRENCY_CODES = {"USD": "$", "EUR": "€", "GBP": "£"}

# Units after a number: (singular, plural). Unambiguous spellings only: "m" or "s" alone are left alone.
_UNITS = {
    "km/h": ("kilometre per hour", "kilometres per hour"), "mph": ("mile per hour", "miles per hour"),
    "°C": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"), "km": ("kilometre", "kilometres"), "kg": ("kilogram", "kilograms"),
    "cm": ("centimetre", "centimetres"), "mm": ("millimetre", "millimetres"), "mi": ("mile", "miles"),
    "lbs": ("pound", "pounds"), "lb": ("pound", "pounds"), "ms": ("millisecond", "milliseconds"),
    "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
    "kWh": ("kilowatt hour", "kilowatt hours"), "%": ("percent", "percent"),
}  # fmt: skip

_ABBREVIATIONS = {
    "Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Prof.": "Professor", "St.": "Saint",
    "Mt.": "Mount", "e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus",
    "approx.": "approximately", "No.": "number", "Jan.": "January", "Feb.": "February", "Aug.": "August",
    "Sept.": "September", "Oct.": "October", "Nov.": "November", "Dec.": "December",
}  # fmt: skip

_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number ", "~": " about ",
            "→": " to ", "×": " times ", "/": " or "}  # fmt: skip

_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"


def _words(number: str, *, ordinal: bool = False) -> str:
    value: float | int = float(number.replace(",", "")) if "." in number else int(number.replace(",", ""))
    words = str(num2words(value, to="ordinal" if ordinal else "cardinal"))
    return words.replace(",", "")  # num2words writes "one million, two hundred": no pauses inside a number


def _count(number: str, singular: str, plural: str) -> str:
    return f"{_words(number)} {singular if number in ('1', '1.0') else plural}"


def _money(match: re.Match[str]) -> str:
    symbol = match["symbol"] or _CURRENCY_CODES[match["code"]]
    whole_name, wholes, cent_name, cents_name = _CURRENCIES[symbol]
    amount = match["amount"].replace(",", "")
    whole, _, cents = amount.partition(".")
    spoken = _count(whole, whole_name, wholes)
    if match["scale"]:
        spoken = f"{_words(amount)} {match['scale']} {wholes}"
    elif cents and int(cents.ljust(2, "0")[:2]):
        spoken += f" and {_count(str(int(cents.ljust(2, '0')[:2])), cent_name, cents_name)}"
    return spoken


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match["hour"]), int(match["minute"])
    suffix = _ampm(match)
    if minute == 0:
        return f"{_words(str(hour))}{suffix}" if suffix else f"{_words(str(hour))} o'clock"
    minutes = f"oh {_words(str(minute))}" if minute < 10 else _words(str(minute))
    return f"{_words(str(hour))} {minutes}{suffix}"


def _hour(match: re.Match[str]) -> str:
    return f"{_words(match['hour'])}{_ampm(match)}"


def _ampm(match: re.Match[str]) -> str:
    """The spoken "p m" for "pm", "p.m." or "PM"; a final dot that also ends the sentence stays."""
    written = match["ampm"]
    if not written:
        return ""
    ends_sentence = written.endswith(".") and re.match(r"\s*(?:$|[A-Z])", match.string[match.end() :])
    return f" {' '.join(written.replace('.', '').lower())}{'.' if ends_sentence else ''}"


def _unit(match: re.Match[str]) -> str:
    singular, plural = _UNITS[match["unit"]]
    return _count(match["number"], singular, plural)


def _link(match: re.Match[str]) -> str:
    host = urlsplit(match[0] if "://" in match[0] else f"http://{match[0]}").hostname or ""
    host = host.removeprefix("www.")
    return f"a link to {host.replace('.', ' dot ')}" if host else "a link"


def _number(match: re.Match[str]) -> str:
    text = match[0]
    plain = text.replace(",", "")
    if "." not in plain and 1100 <= int(plain) <= 2099 and "," not in text:
        return str(num2words(int(plain), to="year"))  # "in 1999" → nineteen ninety-nine
    return _words(text)


def _decimal_point(match: re.Match[str]) -> str:
    return _words(match[0])


_UNIT_PATTERN = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_ABBREVIATION_PATTERN = "|".join(re.escape(a) for a in sorted(_ABBREVIATIONS, key=len, reverse=True))

_RULES: list[_Rule] = [
    # Markup
    (re.compile(r"```.*?(```|$)", re.S), " "),  # code blocks are not read out
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: their alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"^\s{0,3}#{1,6}\s+", re.M), ""),  # headings
    (re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.M), ""),  # list bullets and numbers
    (re.compile(r"^\s*>\s?", re.M), ""),  # quotes
    (re.compile(r"(\*\*|\*|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # bold, italics, strike-through
    (re.compile(r"(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\1(?!\w)"), r"\2"),  # the same with _, not snake_case
    (re.compile(r"^\s*[-*_]{3,}\s*$", re.M), " "),  # rules
    (re.compile(r"^\s*\|?[\s:|-]*-[\s:|-]*$", re.M), " "),  # a table's header rule
    (re.compile(r"^[ \t]*\||\|[ \t]*$", re.M), ""),  # a row's outer bars
    (re.compile(r"\s*\|\s*"), ", "),  # cells
    (re.compile(r"(?<=[^\s.,;:!?])[ \t]*\n\s*"), ". "),  # a line (heading, list item) ends a sentence
    # Links, addresses, paths
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "an email address"),
    (re.compile(r"\bhttps?://\S+?(?=[.,;:!?)\]]*(?:\s|$))"), _link),
    (re.compile(r"\bwww\.[\w-]+(?:\.[\w-]+)+\S*?(?=[.,;:!?)\]]*(?:\s|$))"), _link),
    (re.compile(r"(?<![\w/])(?:~|\.{1,2})?/(?:[\w.-]+/)+[\w.-]*|\b[A-Za-z]:\\\S+"), "a file path"),
    # Forms with digits
    (
        re.compile(
            rf"(?:(?P<symbol>[$€£])|(?P<code>USD|EUR|GBP) ?)(?P<amount>{_NUMBER})"
            rf"(?: ?(?P<scale>million|billion|thousand))?"
        ),  # fmt: skip
        _money,
    ),
    (
        re.compile(r"\b(?P<hour>[012]?\d):(?P<minute>[0-5]\d)(?:\s?(?P<ampm>[AaPp]\.?[Mm]\.?))?(?![\w:])"),
        _time,
    ),
    (re.compile(r"\b(?P<hour>1[0-2]|0?[1-9])\s?(?P<ampm>[AaPp]\.?[Mm]\.?)(?!\w)"), _hour),
    (re.compile(rf"(?P<number>{_NUMBER})\s?(?P<unit>{_UNIT_PATTERN})(?![\w/])"), _unit),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b"), lambda m: _words(m[1], ordinal=True)),
    (re.compile(rf"(?<![\w.]){_NUMBER}(?![\w.]*\d)"), _number),
    # Words
    (re.compile(rf"(?<!\w)(?:{_ABBREVIATION_PATTERN})(?!\w)"), lambda m: _ABBREVIATIONS[m[0]]),
    (re.compile("|".join(re.escape(s) for s in _SYMBOLS)), lambda m: _SYMBOLS[m[0]]),
    (re.compile(r"[*_#<>\[\]{}\\^`|]"), " "),  # any markup symbol left
    (re.compile(r"\s+"), " "),
]


def speakable(text: str) -> str:
    """What the voice should say for `text` (one phrase or more)."""
    text = emoji.replace_emoji(text, "")
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return text.strip()
