"""Which head model renders a clip: a name stored in truth.npz (`head_model`) -> a renderer.

A truth file without the field was made by the legacy jaw-drop model (the bundled demo)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from training.synthetic.face import FaceRig
from training.synthetic.jaw_drop import JawDropRenderer
from training.synthetic.landmark_head import LandmarkHeadRenderer
from training.synthetic.render import HeadRenderer

LANDMARK_WARP = "landmark-warp/1"
JAW_DROP = "jaw-drop/1"
DEFAULT_HEAD_MODEL = LANDMARK_WARP
LEGACY_HEAD_MODEL = JAW_DROP
HEAD_MODELS: dict[str, Callable[[FaceRig], HeadRenderer]] = {
    LANDMARK_WARP: LandmarkHeadRenderer,
    JAW_DROP: JawDropRenderer,
}
SHORT_NAMES = {name.split("/")[0]: name for name in HEAD_MODELS}  # CLI spelling


def head_model_name(head_model: str) -> str:
    """The full name ("landmark-warp/1") of a head model given with or without its version."""
    name = SHORT_NAMES.get(head_model, head_model)
    if name not in HEAD_MODELS:
        known = ", ".join(sorted([*HEAD_MODELS, *SHORT_NAMES]))
        raise ValueError(f"unknown head model {head_model!r}; known: {known}")
    return name


def make_renderer(rig: FaceRig, head_model: str = DEFAULT_HEAD_MODEL) -> HeadRenderer:
    """The renderer of `head_model` ("landmark-warp/1", "jaw-drop/1", or without "/1")."""
    return HEAD_MODELS[head_model_name(head_model)](rig)


def head_model_of(truth: Mapping[str, object]) -> str:
    """The head model a truth file was rendered with (no field: the legacy one)."""
    return str(truth["head_model"]) if "head_model" in truth else LEGACY_HEAD_MODEL
