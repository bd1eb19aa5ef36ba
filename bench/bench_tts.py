"""Real-time factor and time to first audio of the TTS service over gRPC (piper joe voice).

    .venv/bin/python -m bench.bench_tts [--repeats 5]

Starts the TTS server in-process on a free 127.0.0.1 port and streams each text as a remote
client would: whole, and word by word (an LLM's tokens). RTF = wall time of the stream / audio
duration (DESIGN §6: <= 0.06); first audio = time from the first request to the first
AudioChunk (<= 200 ms). "piper direct" is the same synthesis without gRPC, for the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator

import numpy as np
import onnxruntime

from services.tts.server import build_server
from services.tts.voices import load_voices
from synctalk.config import load_settings
from synctalk.log import configure_logging
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import tts_pb2, tts_pb2_grpc

TEXTS = {
    "one sentence": "The quick brown fox jumps over the lazy dog near the river bank.",
    "three sentences": (
        "Good morning, and welcome to the demo. I can speak any text you send me, one sentence "
        "at a time. The first words play while the rest is still being made."
    ),
}


def pieces(text: str, word_by_word: bool) -> Iterator[tts_pb2.SynthesizeRequest]:
    yield tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig())
    parts = [w + " " for w in text.split(" ")] if word_by_word else [text]
    for part in parts:
        yield tts_pb2.SynthesizeRequest(text=part.encode("utf-8"))


async def one_stream(stub: tts_pb2_grpc.TextToSpeechStub, text: str, word_by_word: bool
                     ) -> tuple[float, float, float]:
    """(first audio s, total s, audio s) of one Synthesize call."""
    started = time.perf_counter()
    first = 0.0
    samples = 0
    async for chunk in stub.Synthesize(pieces(text, word_by_word), timeout=120):
        first = first or time.perf_counter() - started
        samples += len(chunk.pcm) // 2
    return first, time.perf_counter() - started, samples / 16000


def row(label: str, runs: list[tuple[float, float, float]]) -> None:
    first = statistics.median(r[0] for r in runs) * 1000
    rtf = statistics.median(r[1] / r[2] for r in runs)
    audio = statistics.median(r[2] for r in runs)
    print(f"{label:<44} {audio:>8.2f} {rtf:>8.3f} {first:>12.0f}")


async def bench(repeats: int) -> None:
    settings = load_settings()
    server = build_server(settings, "127.0.0.1", 0)
    await server.start()
    try:
        async with dial(server.address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            await one_stream(stub, "Warm up.", False)
            for name, text in TEXTS.items():
                for word_by_word in (False, True):
                    runs = [await one_stream(stub, text, word_by_word) for _ in range(repeats)]
                    row(f"gRPC {name}, {'word by word' if word_by_word else 'whole text'}", runs)
            text = TEXTS["three sentences"]
            runs = []
            for _ in range(repeats):
                runs.extend(await asyncio.gather(*(one_stream(stub, text, True) for _ in range(2))))
            row("gRPC three sentences, 2 concurrent", runs)
    finally:
        await server.server.stop(0)


def bench_direct(repeats: int) -> None:
    voice = load_voices(load_settings().tts).get("")
    for name, text in TEXTS.items():
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            audio = voice.synthesize(text, 1.0, False)
            elapsed = time.perf_counter() - started
            runs.append((elapsed, elapsed, len(audio) / voice.native_sample_rate))
        row(f"piper direct {name} (first = all)", runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    configure_logging("bench", "console", "WARNING")
    print(f"# bench_tts: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")
    print(f"# command: {' '.join([sys.executable, '-m', 'bench.bench_tts', *(argv or sys.argv[1:])])}")
    print(f"# median of {args.repeats} runs after one warm-up; RTF = stream wall time / audio seconds")
    print(f"{'path':<44} {'audio s':>8} {'RTF':>8} {'first ms':>12}")
    asyncio.run(bench(args.repeats))
    bench_direct(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
