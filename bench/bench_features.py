"""Real-time factor of the audio front end and both feature extractors, offline and streaming.

    .venv/bin/python -m bench.bench_features [--seconds 10] [--repeats 3] [--device cpu]

Prints the median wall time of each path and how many times faster than real time it runs
(audio seconds / compute seconds; DESIGN §6 asks for >= 100x). Streaming is measured with
640-sample pushes (one video frame, a live microphone) and 16000-sample pushes (1 s, TTS).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable

import numpy as np
import torch

from bench.timing import median_seconds
from synctalk.audio.mel import wav2lip_mel, whisper_log_mel
from synctalk.config import ModelsConfig
from synctalk.features import get_extractor
from synctalk.features.base import FeatureExtractor


def test_signal(seconds: float) -> np.ndarray:
    """Speech-like load: noise under a 4 Hz syllable envelope (compute does not depend on content)."""
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    rng = np.random.default_rng(0)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def streamed(extractor: FeatureExtractor, audio: np.ndarray, size: int) -> Callable[[], int]:
    def run() -> int:
        stream = extractor.start_stream()
        n = 0
        for start in range(0, audio.size, size):
            n += len(stream.push(audio[start : start + size]))
        return n + len(stream.finish())

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                        help="AVE encoder backend on the CPU")
    args = parser.parse_args(argv)

    audio = test_signal(args.seconds)
    models = ModelsConfig(device=args.device, backend=args.backend)
    print(f"# bench_features: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {args.device}, backend {args.backend}")
    print(f"# command: {' '.join([sys.executable, '-m', 'bench.bench_features', *(argv or sys.argv[1:])])}")
    print(f"# audio: {args.seconds:g} s, median of {args.repeats} runs after one warm-up")
    print(f"{'path':<34} {'median s':>9} {'x real time':>12}")

    def report(label: str, seconds: float) -> None:
        print(f"{label:<34} {seconds:>9.4f} {args.seconds / seconds:>12.1f}")

    report("mel wav2lip (whole file)", median_seconds(lambda: wav2lip_mel(audio), args.repeats))
    n_whisper = int(args.seconds * 100)
    report("mel whisper (whole file)",
           median_seconds(lambda: whisper_log_mel(audio, 0, n_whisper), args.repeats))
    for mode in ("ave", "whisper"):
        extractor = get_extractor(mode, models)
        report(f"{mode} offline", median_seconds(lambda e=extractor: e.extract(audio), args.repeats))
        for size in (640, 16000):
            report(f"{mode} streaming, {size}-sample pushes",
                   median_seconds(streamed(extractor, audio, size), args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
