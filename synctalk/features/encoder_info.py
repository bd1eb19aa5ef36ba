"""Which audio encoder a feature mode runs and whether it was trained. Without
`models.ave_checkpoint` the `ave` mode runs a seeded, untrained network; this one description
is what the train summary, `synctalk evaluate`, avatar.json and the logs show, so that case is
never silent and every place gives the same fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synctalk.config import ModelsConfig

AVE_CHECKPOINT_HINT = ("set SYNCTALK_MODELS__AVE_CHECKPOINT (or models.ave_checkpoint) to "
                       "SyncTalk_2D's audio_visual_encoder.pth")


@dataclass(frozen=True)
class AudioEncoderInfo:
    """One feature mode's encoder: `checkpoint` is the AVE weights file or the Whisper model
    folder ("" = the built-in one: seeded for `ave`, the bundled model for `whisper`)."""

    mode: str
    trained: bool
    checkpoint: str = ""

    @property
    def label(self) -> str:
        """One line naming the encoder."""
        if self.mode == "ave" and self.trained:
            return f"ave: SyncTalk_2D audio-visual encoder ({self.checkpoint})"
        if self.mode == "ave":
            return "ave: seeded, UNTRAINED encoder (models.ave_checkpoint is empty)"
        return f"{self.mode}: pretrained Whisper tiny.en encoder ({self.checkpoint or 'bundled'})"

    @property
    def hint(self) -> str:
        """How to get a trained encoder ("" when this one is trained)."""
        return "" if self.trained else AVE_CHECKPOINT_HINT

    @property
    def warning(self) -> str:
        """The line to show next to anything made with an untrained encoder ("" if trained)."""
        if self.trained:
            return ""
        return (f"WARNING: the {self.mode} audio encoder is untrained (seeded weights, not "
                f"trained for lip sync), so lips follow the audio poorly; {self.hint}")

    def as_dict(self) -> dict[str, Any]:
        """For reports (`synctalk evaluate --json`)."""
        return {"mode": self.mode, "trained": self.trained, "encoder": self.label,
                "checkpoint": self.checkpoint, "warning": self.warning}

    def record(self) -> dict[str, Any]:
        """What avatar.json keeps: the weights' file name and sha256 (None without a file)."""
        path = Path(self.checkpoint) if self.checkpoint else None
        return {"mode": self.mode, "trained": self.trained,
                "checkpoint": path.name if path else "",
                "sha256": file_sha256(path) if path and path.is_file() else None}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AudioEncoderInfo:
        """The description back from an avatar.json record (the checkpoint as its file name)."""
        return cls(str(record.get("mode", "")), record.get("trained") is True,
                   str(record.get("checkpoint") or ""))


def describe_audio_encoder(models: ModelsConfig, mode: str | None = None) -> AudioEncoderInfo:
    """The encoder `mode` (default `models.feature_mode`) runs under this configuration."""
    mode = mode or models.feature_mode
    if mode == "ave":
        return AudioEncoderInfo("ave", bool(models.ave_checkpoint), models.ave_checkpoint)
    if mode == "whisper":
        return AudioEncoderInfo("whisper", True, models.whisper_model_dir)
    raise ValueError(f"unknown feature mode {mode!r}")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
