"""A synthetic talking head with known ground truth, for tests and demos: a public-domain face
photo whose jaw and mouth follow piper's phoneme timings (`synctalk synth`)."""

from training.synthetic.clip import DEFAULT_TEXT, Clip, ClipRequest, make_clip
from training.synthetic.models import DEFAULT_HEAD_MODEL, HEAD_MODELS, make_renderer

__all__ = ["DEFAULT_HEAD_MODEL", "DEFAULT_TEXT", "HEAD_MODELS", "Clip", "ClipRequest", "make_clip",
           "make_renderer"]
