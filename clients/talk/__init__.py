"""The reference client of the realtime protocol: speaks WAVs like a person, plays replies in real time."""

from clients.talk.cli import add_arguments, add_token_argument, run
from clients.talk.events import TalkError
from clients.talk.player import Player
from clients.talk.session import DEFAULT_URL, ConversationResult, converse, converse_pcm, talk
from clients.talk.turns import TalkResult, TraceEntry

__all__ = [
    "DEFAULT_URL",
    "ConversationResult",
    "Player",
    "TalkError",
    "TalkResult",
    "TraceEntry",
    "add_arguments",
    "add_token_argument",
    "converse",
    "converse_pcm",
    "run",
    "talk",
]
