"""A synthetic talking head with known ground truth, for tests and demos: a public-domain face
photo whose jaw and mouth follow piper's phoneme timings (`synctalk synth`)."""

from training.synthetic.clip import DEFAULT_TEXT, Clip, ClipRequest, make_clip

__all__ = ["DEFAULT_TEXT", "Clip", "ClipRequest", "make_clip"]
