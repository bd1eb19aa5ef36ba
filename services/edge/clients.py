"""The edge's channels to tts, audio_features and renderer, with short-lived lookups cached.

One channel per service (`synctalk.rpc.channel.dial`: DNS names resolve to every replica
and calls are spread with round_robin); Render streams go through `RendererPool`, which
holds a channel per renderer replica and sends each new stream to the least-loaded one.
Avatar metadata and the voice list are cached for a few seconds so that validating a
request costs no round trip on the hot path, while a new avatar or voice still shows up
quickly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.edge.balancer import RendererPool
from services.edge.errors import EdgeError, from_rpc, unknown
from synctalk.avatar.layout import mode_for_avatar
from synctalk.config import ServerConfig, ServicesConfig
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import (
    audio_features_pb2,
    audio_features_pb2_grpc,
    renderer_pb2,
    tts_pb2,
    tts_pb2_grpc,
)

TTS, FEATURES, RENDERER = "tts", "audio_features", "renderer"
GRPC_SERVICE_NAMES = {
    TTS: tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name,
    FEATURES: audio_features_pb2.DESCRIPTOR.services_by_name["AudioFeatures"].full_name,
    RENDERER: renderer_pb2.DESCRIPTOR.services_by_name["Renderer"].full_name,
}
UNARY_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 1.0
CACHE_TTL_S = 10.0


@dataclass(frozen=True)
class AvatarMeta:
    name: str
    width: int
    height: int
    num_frames: int
    fps: float
    feature_modes: tuple[str, ...]
    still_jpeg: bytes


@dataclass(frozen=True)
class VoiceMeta:
    id: str
    engine: str
    language: str
    is_default: bool


class Downstream:
    """Stubs for the three downstream services plus cached avatar and voice lookups."""

    def __init__(
        self, services: ServicesConfig, server: ServerConfig, *, default_avatar: str,
        feature_mode: str,
    ) -> None:
        cap, transport = server.max_message_bytes, server.transport
        self.channels = {
            TTS: dial(services.tts_target, cap, transport),
            FEATURES: dial(services.audio_features_target, cap, transport),
            RENDERER: dial(services.renderer_target, cap, transport),
        }
        self.tts = tts_pb2_grpc.TextToSpeechStub(self.channels[TTS])
        self.features = audio_features_pb2_grpc.AudioFeaturesStub(self.channels[FEATURES])
        self.renderer = RendererPool(services.renderer_target, cap, self.channels[RENDERER],
                                     transport=transport)
        self.default_avatar = default_avatar
        self.feature_mode = feature_mode
        self._avatars: dict[str, tuple[float, AvatarMeta]] = {}
        self._avatar_list: tuple[float, list[renderer_pb2.AvatarInfo]] | None = None
        self._voices: tuple[float, list[VoiceMeta]] | None = None
        self._lookahead: dict[str, list[int]] = {}  # mode -> look-ahead by trim

    async def close(self) -> None:
        await self.renderer.close()
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))

    async def health(self) -> dict[str, str]:
        """grpc.health.v1 status of each downstream: "ok", "not_serving" or "unavailable"."""
        names = list(self.channels)
        states = await asyncio.gather(*(self.health_of(name) for name in names))
        return dict(zip(names, states, strict=True))

    async def health_of(self, service: str) -> str:
        """One downstream's health within HEALTH_TIMEOUT_S: a stopped (SIGSTOP) or wedged
        process answers nothing and reads "unavailable" after that second."""
        stub = health_pb2_grpc.HealthStub(self.channels[service])
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=GRPC_SERVICE_NAMES[service]),
                timeout=HEALTH_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError:
            return "unavailable"
        return "ok" if reply.status == health_pb2.HealthCheckResponse.SERVING else "not_serving"

    async def voices(self) -> list[VoiceMeta]:
        now = time.monotonic()
        if self._voices is not None and self._voices[0] > now:
            return self._voices[1]
        try:
            reply = await self.tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=UNARY_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc(TTS, err) from None
        voices = [VoiceMeta(v.id, v.engine, v.language, v.is_default) for v in reply.voices]
        self._voices = (now + CACHE_TTL_S, voices)
        return voices

    async def voice(self, voice_id: str) -> VoiceMeta:
        """The voice `voice_id` (empty: the default voice); 404 if the TTS service lacks it."""
        voices = await self.voices()
        for voice in voices:
            if voice.id == voice_id or (not voice_id and voice.is_default):
                return voice
        if not voice_id and voices:
            return voices[0]
        raise unknown("voice", voice_id)

    async def avatar_list(self) -> list[renderer_pb2.AvatarInfo]:
        now = time.monotonic()
        if self._avatar_list is not None and self._avatar_list[0] > now:
            return self._avatar_list[1]
        try:
            reply = await self.renderer.ListAvatars(
                renderer_pb2.ListAvatarsRequest(), timeout=UNARY_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc(RENDERER, err) from None
        avatars = sorted(reply.avatars, key=lambda a: a.name)
        self._avatar_list = (now + CACHE_TTL_S, avatars)
        return avatars

    async def resolve_avatar_name(self, name: str) -> str:
        """`name`, or for an empty name the configured default (or, if the renderer lacks it,
        the first avatar it lists), so a fresh install with one avatar just works."""
        if name:
            return name
        names = [a.name for a in await self.avatar_list()]
        if self.default_avatar in names or not names:
            return self.default_avatar
        return names[0]

    async def avatar(self, name: str) -> AvatarMeta:
        """Metadata and still frame of an avatar; 404 if the renderer does not know it."""
        name = await self.resolve_avatar_name(name)
        now = time.monotonic()
        cached = self._avatars.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            info = await self.renderer.GetAvatar(
                renderer_pb2.GetAvatarRequest(name=name), timeout=UNARY_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise unknown("avatar", name) from None
            raise from_rpc(RENDERER, err) from None
        meta = AvatarMeta(
            name=info.name or name,
            width=info.width,
            height=info.height,
            num_frames=info.num_frames,
            fps=info.fps or 25.0,
            feature_modes=tuple(info.feature_modes),
            still_jpeg=bytes(info.still_jpeg),
        )
        self._avatars[name] = (now + CACHE_TTL_S, meta)
        return meta

    def feature_mode_for(self, avatar: AvatarMeta) -> str:
        """The configured feature mode if the avatar has a U-Net for it, else one it has."""
        return mode_for_avatar(self.feature_mode, avatar.feature_modes)

    async def lookahead_frames(self, mode: str, trim: int = 0) -> tuple[int, int]:
        """The look-ahead trim `mode` grants (at most `trim`: a server that knows no trim
        grants 0) and the feature look-ahead with it (ListModes, cached); 503 naming
        audio_features when the service cannot be reached."""
        if mode not in self._lookahead:
            try:
                reply = await self.features.ListModes(
                    audio_features_pb2.ListModesRequest(), timeout=UNARY_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                raise from_rpc(FEATURES, err) from None
            self._lookahead.update({m.name: list(m.trimmed_lookahead_frames)
                                    or [m.lookahead_frames] for m in reply.modes})
            if mode not in self._lookahead:
                raise EdgeError(503, grpc.StatusCode.UNAVAILABLE,
                                f"audio_features service has no feature mode {mode!r}",
                                service=FEATURES)
        by_trim = self._lookahead[mode]
        granted = min(max(trim, 0), len(by_trim) - 1)
        return granted, by_trim[granted]
