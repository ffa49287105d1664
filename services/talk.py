"""Moved to `clients.talk`; this alias keeps `from services.talk import talk` working until callers move."""

from clients.talk import DEFAULT_URL, TalkError, TalkResult, add_arguments, run, talk

__all__ = ["DEFAULT_URL", "TalkError", "TalkResult", "add_arguments", "run", "talk"]
