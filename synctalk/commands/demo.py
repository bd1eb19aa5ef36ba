"""`synctalk demo`: a smoke test of the TTS service — speak a sentence, write it to a WAV.

It starts the TTS server in-process on a free 127.0.0.1 port and talks to it over gRPC
exactly as a remote client would. The full web demo is `synctalk serve` (`make demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from synctalk.config import Settings, load_settings
from synctalk.log import configure_logging
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import tts_pb2, tts_pb2_grpc

DEFAULT_TEXT = "Hello! I am a talking head, and this sentence came from the text to speech service."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthesize a sentence over gRPC and write result/demo.wav")
    p.add_argument("--text", default=DEFAULT_TEXT, help="what to say")
    p.add_argument("--voice", default="", help="voice id (default: the server's default voice)")
    p.add_argument("--out", type=Path, default=Path("result/demo.wav"), help="WAV file to write")
    p.set_defaults(func=run)


async def synthesize_demo(settings: Settings, text: str, voice: str, out: Path) -> dict[str, float]:
    """Start TTS on a free local port, stream `text`, write 16 kHz WAV; returns the figures."""
    from services.tts.server import build_server

    server = build_server(settings, "127.0.0.1", 0)
    await server.start()
    try:
        async with dial(server.address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            requests = [
                tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(voice=voice)),
                tts_pb2.SynthesizeRequest(text=text.encode("utf-8")),
            ]
            started = time.perf_counter()
            first_audio_s = None
            pcm: list[bytes] = []
            sample_rate = settings.tts.output_sample_rate
            async for chunk in stub.Synthesize(iter(requests), timeout=120):
                first_audio_s = first_audio_s or time.perf_counter() - started
                pcm.append(chunk.pcm)
                sample_rate = chunk.sample_rate
            total_s = time.perf_counter() - started
    finally:
        await server.server.stop(0)
    samples = np.frombuffer(b"".join(pcm), dtype="<i2")
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, samples, sample_rate, subtype="PCM_16")
    return {"duration_s": len(samples) / sample_rate, "first_audio_ms": (first_audio_s or 0) * 1000,
            "synthesis_s": total_s, "sample_rate": sample_rate}


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("demo", settings.log_format, settings.log_level)
    figures = asyncio.run(synthesize_demo(settings, args.text, args.voice, args.out))
    print(args.out.resolve())
    print(f"duration {figures['duration_s']:.2f} s at {figures['sample_rate']:.0f} Hz, "
          f"first audio after {figures['first_audio_ms']:.0f} ms, "
          f"real-time factor {figures['synthesis_s'] / figures['duration_s']:.3f}")
    return 0
