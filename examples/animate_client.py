"""Stream an audio file (or text) to the edge's gRPC Avatar.Animate and write the talking head
it sends back, each frame with the audio that plays with it, to an mp4.

    python examples/animate_client.py speech.wav result/animated.mp4
    python examples/animate_client.py --text "Hello there." result/hello.mp4
    python examples/animate_client.py speech.wav out.mp4 --target 127.0.0.1:50064 --avatar demo --realtime

The audio is sent at its own sample rate in 40 ms chunks (the edge resamples to 16 kHz);
`--realtime` paces the chunks like a live microphone would.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import soundfile as sf

from synctalk.audio.pcm import SAMPLE_RATE, float_to_s16le, s16le_to_float
from synctalk.render.mp4 import Mp4Writer, atomic_mp4
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2

CHUNK_S = 0.04


def read_audio(path: Path) -> tuple[bytes, int]:
    """(mono s16le PCM, sample rate) of a sound file, at its own rate."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return float_to_s16le(audio.mean(axis=1)), int(rate)


async def requests(pcm: bytes, rate: int, text: str | None, avatar: str, voice: str,
                   realtime: bool) -> AsyncIterator[avatar_pb2.AnimateRequest]:
    config = avatar_pb2.AnimateConfig(avatar=avatar, voice=voice, sample_rate=rate,
                                      encoding=common_pb2.IMAGE_ENCODING_JPEG)
    yield avatar_pb2.AnimateRequest(config=config)
    if text is not None:
        yield avatar_pb2.AnimateRequest(text=text.encode("utf-8"))
        return
    step = int(rate * CHUNK_S) * 2
    started = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), step)):
        if realtime:
            await asyncio.sleep(max(0.0, started + i * CHUNK_S - time.monotonic()))
        chunk = common_pb2.AudioChunk(pcm=pcm[offset : offset + step], sample_rate=rate,
                                      start_sample=offset // 2)
        yield avatar_pb2.AnimateRequest(audio=chunk)


async def animate(args: argparse.Namespace) -> int:
    pcm, rate = (b"", SAMPLE_RATE) if args.text else read_audio(args.audio)
    images: list[bytes] = []
    audio: list[bytes] = []
    session = ""
    started = time.monotonic()
    first_frame_s = None
    async with dial(args.target) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        call = stub.Animate(requests(pcm, rate, args.text, args.avatar, args.voice, args.realtime),
                            timeout=args.timeout)
        try:
            async for message in call:
                first_frame_s = first_frame_s or time.monotonic() - started
                images.append(message.frame.data)
                audio.append(message.audio)
                session = message.session_id
        except grpc.aio.AioRpcError as err:
            print(f"Animate failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    if not images:
        print("no frames came back", file=sys.stderr)
        return 1
    first = cv2.imdecode(np.frombuffer(images[0], np.uint8), cv2.IMREAD_COLOR)
    sound = s16le_to_float(b"".join(audio))
    with atomic_mp4(args.out) as tmp:
        writer = Mp4Writer(tmp, first.shape[1], first.shape[0], sound, SAMPLE_RATE)
        for jpeg in images:
            writer.write(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
        writer.close()
    print(f"wrote {args.out}: {len(images)} frames ({len(images) / 25:.2f} s), session {session}, "
          f"first frame after {1000 * (first_frame_s or 0):.0f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="+", metavar="[AUDIO] OUT",
                        help="audio file to send (WAV, FLAC, ...; not with --text), mp4 to write")
    parser.add_argument("--text", default=None, help="speak this text instead of a file")
    parser.add_argument("--target", default="127.0.0.1:50064", help="edge gRPC address")
    parser.add_argument("--avatar", default="", help="avatar name (default: the edge's)")
    parser.add_argument("--voice", default="", help="TTS voice for --text")
    parser.add_argument("--realtime", action="store_true", help="send audio at real-time pace")
    parser.add_argument("--timeout", type=float, default=600.0, help="call deadline in seconds")
    args = parser.parse_args(argv)
    wanted = 1 if args.text is not None else 2
    if len(args.paths) != wanted:
        parser.error("give AUDIO OUT, or --text TEXT OUT")
    args.audio = args.paths[0] if wanted == 2 else None
    args.out = args.paths[-1]
    return asyncio.run(animate(args))


if __name__ == "__main__":
    sys.exit(main())
