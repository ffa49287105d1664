"""One question through a running mesh: the talk client end to end, the services' histograms per stage."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import httpx

from clients.bench.metrics import PORT_OFFSETS, Scrape, count_deltas, delta, parse_histograms, stage_deltas
from clients.bench.results import TurnResult
from clients.talk import ConversationResult, TalkError, converse_pcm
from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH

log = logging.getLogger(__name__)

_TTS_FIRST_BYTE = "voxmesh_tts_first_byte_seconds"
_WATCH_EVERY_S = 0.05


def metrics_urls(url: str) -> dict[str, str]:
    """Each service's /metrics for a gateway URL, with the ports `voxmesh up --port P` uses (P+1.., P+4)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return {service: f"http://{host}:{port + offset}/metrics" for service, offset in PORT_OFFSETS.items()}


class MeshBench:
    """Asks questions one at a time, each in a fresh session, and reads each stage from /metrics deltas."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        timeout_s: float = 60.0,
        token: str | None = None,
        webrtc: bool = False,
    ) -> None:
        self.url = url
        self.webrtc = webrtc
        """Sessions over WebRTC (the offer URL derived from `url`) instead of the WebSocket."""
        self.token = token
        self.client = client
        self.timeout_s = timeout_s
        self._urls = metrics_urls(url)
        self._unavailable: set[str] = set()

    async def scrape(self, service: str) -> Scrape | None:
        """One service's histograms, None if its /metrics does not answer (logged once per service)."""
        try:
            response = await self.client.get(self._urls[service])
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if service not in self._unavailable:
                self._unavailable.add(service)
                log.warning("no metrics from %s (%s): its stages are left out", self._urls[service], exc)
            return None
        return parse_histograms(response.text)

    async def scrape_all(self) -> dict[str, Scrape]:
        """Every service that answers, by name."""
        found = await asyncio.gather(*(self.scrape(service) for service in self._urls))
        return {service: scrape for service, scrape in zip(self._urls, found, strict=True) if scrape}

    async def ask(self, index: int, question: str, pcm: bytes) -> TurnResult:
        """Speak `pcm` (16 kHz, cut at the end of speech) and measure the reply."""
        result = TurnResult(index, question, "mesh")
        before = await self.scrape_all()
        speech_s = len(pcm) / (ASR_SAMPLE_RATE * SAMPLE_WIDTH)
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(self._first_tts_byte(before.get("tts"), speech_s))
            conversation = await self._converse(pcm, result)
            watcher.cancel()
        after = await self.scrape_all()
        result.counts.update(count_deltas(before, after))
        if not watcher.cancelled() and (first_tts := watcher.result()) is not None:
            after["tts"] = first_tts
        stages, flags = stage_deltas(before, after)
        result.stages_ms.update(stages)
        result.flags.extend(flags)
        if conversation is not None:
            turn = conversation.turns[0]
            result.transcript, result.reply_text = turn.transcript, turn.reply_text
            if turn.first_audio_ms is None:
                result.error = "no reply audio"
            else:
                result.stages_ms["first_audio"] = turn.first_audio_ms
        return result

    async def _converse(self, pcm: bytes, result: TurnResult) -> ConversationResult | None:
        try:
            return await converse_pcm(
                [pcm], url=self.url, timeout_s=self.timeout_s, token=self.token, webrtc=self.webrtc
            )
        except TalkError as exc:
            result.error = str(exc)
            return None

    async def _first_tts_byte(self, before: Scrape | None, wait_s: float) -> Scrape | None:
        """The TTS histograms as soon as the reply's first phrase has been observed.

        TTS observes its first-byte time once per phrase, so by the end of the turn the delta is a mean
        over the reply; watching from the end of speech catches the first phrase alone.
        """
        if before is None:
            return None
        await asyncio.sleep(wait_s)
        while True:
            scrape = await self.scrape("tts")
            if scrape is not None and delta(before, scrape, _TTS_FIRST_BYTE) is not None:
                return scrape
            await asyncio.sleep(_WATCH_EVERY_S)
