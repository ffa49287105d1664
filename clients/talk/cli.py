"""`voxmesh talk`: the command line around the talk client."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from clients.talk.events import TalkError
from clients.talk.session import DEFAULT_URL, converse
from clients.talk.turns import TalkResult
from shared.audio import pcm_duration_ms, write_wav


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `voxmesh talk` arguments."""
    parser.add_argument(
        "wav", type=Path, nargs="+", help="questions as WAV files (any rate, any channels), spoken in turn"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the spoken reply to this WAV (several questions: NAME-1.wav, ...)",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--webrtc",
        action="store_true",
        help="talk over WebRTC (Opus audio tracks, events on a data channel) instead of the WebSocket;"
        " the offer goes to /v1/webrtc/offer on the --url's host",
    )
    add_token_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per question")
    parser.add_argument(
        "--barge-in-ms",
        type=float,
        default=None,
        metavar="N",
        help="speak each next file N ms after the previous reply's first audio (talk over it)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per question before giving up")


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    """`--token`, defaulting to $VOXMESH_TOKEN: the session token a gateway beyond loopback requires."""
    parser.add_argument(
        "--token",
        default=os.environ.get("VOXMESH_TOKEN"),
        help="session token (`voxmesh token`; default $VOXMESH_TOKEN), sent as a WebSocket subprotocol"
        " (over WebRTC: as a bearer token with the offer)",
    )


def _out_path(out: Path, index: int, count: int) -> Path:
    return out if count == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix or '.wav'}")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _summary(result: TalkResult, several: bool) -> dict[str, object]:
    summary: dict[str, object] = {"transcript": result.transcript, "reply_text": result.reply_text}
    if several:  # one file keeps the original four fields
        summary |= {"heard_text": result.heard_text, "interrupted": result.interrupted}
    return summary | {"first_audio_ms": _ms(result.first_audio_ms), "total_ms": _ms(result.total_ms)}


def _print_text(result: TalkResult, out: Path | None) -> None:
    first = result.first_audio_ms
    seconds = pcm_duration_ms(result.reply_audio, result.sample_rate) / 1000.0
    print(f"you said:    {result.transcript}")
    print(f"reply:       {result.reply_text}")
    if result.interrupted:
        print(f"heard:       {result.heard_text if result.heard_text is not None else '?'} (interrupted)")
    print(f"first audio: {'-' if first is None else f'{first:.0f} ms'} after the end of the file")
    print(f"total:       {'-' if result.total_ms is None else f'{result.total_ms:.0f} ms'}")
    print(f"audio:       {seconds:.2f} s at {result.sample_rate} Hz" + (f" -> {out}" if out else ""))


def run(args: argparse.Namespace) -> int:
    """Run `voxmesh talk` with parsed arguments; returns the process exit code."""
    wavs: list[Path] = args.wav
    try:
        conversation = asyncio.run(
            converse(
                wavs,
                url=args.url,
                barge_in_ms=args.barge_in_ms,
                timeout_s=args.timeout,
                token=args.token,
                webrtc=args.webrtc,
            )  # fmt: skip
        )
        outs = [None if args.out is None else _out_path(args.out, i, len(wavs)) for i in range(len(wavs))]
        for result, out in zip(conversation.turns, outs, strict=True):
            if out is not None:
                write_wav(out, result.reply_audio, result.sample_rate)
    except (TalkError, ValueError, OSError) as exc:
        print(f"voxmesh talk: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    several = len(wavs) > 1
    for index, (result, out) in enumerate(zip(conversation.turns, outs, strict=True)):
        if args.json:
            print(json.dumps(_summary(result, several)))
            continue
        if several:
            print(f"--- {wavs[index]}")
        _print_text(result, out)
    return 0
