"""Audio feature extractors: one interface, selected by name (`get_extractor`)."""

from synctalk.features.base import FeatureExtractor, FeatureStream, Frame
from synctalk.features.registry import MODES, UnknownModeError, get_extractor

__all__ = ["MODES", "FeatureExtractor", "FeatureStream", "Frame", "UnknownModeError",
           "get_extractor"]
