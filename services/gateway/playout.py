"""Puts one turn's reply audio back in phrase order, whatever order the TTS replicas finish in."""

from __future__ import annotations


class ReplyAssembler:
    """Releases chunks of phrase n only after phrase n-1 is complete; drops duplicates."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self.started = False
        self.announced = False
        """The client has been told audio is coming (set by the session)."""
        self.ended = False
        self._phrase = 0
        self._chunk = 0
        self._pending: dict[int, dict[int, bytes]] = {}
        self._chunk_counts: dict[int, int] = {}
        self._phrase_count: int | None = None
        self.released_bytes: list[int] = []
        """Audio bytes released so far per phrase, in phrase order (the last one may still grow)."""

    @property
    def phrases_done(self) -> int:
        """How many leading phrases have all their audio released."""
        return self._phrase

    @property
    def complete(self) -> bool:
        """All phrases of the reply are known and released."""
        return self._phrase_count is not None and self._phrase >= self._phrase_count

    def add_chunk(self, phrase_seq: int, chunk_seq: int, audio: bytes) -> list[bytes]:
        """Accept a chunk; returns the audio now releasable, in order."""
        already_out = phrase_seq < self._phrase or (phrase_seq == self._phrase and chunk_seq < self._chunk)
        if not already_out:
            self._pending.setdefault(phrase_seq, {}).setdefault(chunk_seq, audio)
        return self._release()

    def phrase_done(self, phrase_seq: int, chunk_count: int) -> list[bytes]:
        """Record how many chunks a phrase has; returns audio now releasable."""
        self._chunk_counts.setdefault(phrase_seq, chunk_count)
        return self._release()

    def reply_done(self, phrase_count: int) -> None:
        """Record how many phrases the reply has."""
        if self._phrase_count is None:
            self._phrase_count = phrase_count

    def _release(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            chunks = self._pending.get(self._phrase, {})
            while self._chunk in chunks:
                pcm = chunks.pop(self._chunk)
                out.append(pcm)
                while len(self.released_bytes) <= self._phrase:
                    self.released_bytes.append(0)
                self.released_bytes[self._phrase] += len(pcm)
                self._chunk += 1
            count = self._chunk_counts.get(self._phrase)
            if count is None or self._chunk < count:
                break
            self._pending.pop(self._phrase, None)
            while len(self.released_bytes) <= self._phrase:
                self.released_bytes.append(0)  # a phrase with no audio at all
            self._phrase += 1
            self._chunk = 0
        if out:
            self.started = True
        return out
