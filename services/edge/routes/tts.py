"""Audio and TTS: the voices, and text to speech as a WAV download."""

from __future__ import annotations

import io
import wave
from typing import Annotated, Any

import grpc
from fastapi import Query
from fastapi.responses import Response

from services.edge.clients import TTS
from services.edge.errors import from_rpc
from services.edge.routes.deps import Runtime, VoiceQuery, new_router
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.rpc.gen.lipsync.v1 import tts_pb2

router = new_router()


@router.get("/voices", summary="TTS voices")
async def voices(rt: Runtime) -> dict[str, Any]:
    listed = await rt.downstream.voices()
    return {"voices": [{"id": v.id, "engine": v.engine, "language": v.language,
                        "default": v.is_default} for v in listed]}


@router.get("/get-tts-audio", summary="Text to speech as a WAV download (16 kHz mono 16-bit)",
            responses={200: {"content": {"audio/wav": {}},
                             "headers": {"X-Audio-Duration": {"description": "seconds"}}}})
async def tts_audio(
    rt: Runtime,
    text: Annotated[str, Query(description="What to say")],
    voice: VoiceQuery = "",
) -> Response:
    text = rt.check_text(text)
    voice_id = await rt.check_voice(voice)
    requests = [
        tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(
            voice=voice_id, sample_rate=SAMPLE_RATE)),
        tts_pb2.SynthesizeRequest(text=text.encode("utf-8")),
    ]
    try:
        call = rt.downstream.tts.Synthesize(iter(requests), timeout=120)
        pcm = b"".join([chunk.pcm async for chunk in call])
    except grpc.aio.AioRpcError as err:
        raise from_rpc(TTS, err) from None
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)
    duration = len(pcm) / 2 / SAMPLE_RATE
    return Response(out.getvalue(), media_type="audio/wav", headers={
        "X-Audio-Duration": f"{duration:.3f}",
        "Content-Disposition": 'attachment; filename="tts_audio.wav"'})
