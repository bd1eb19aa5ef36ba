"""One utterance through the three services: (text ->) TTS -> AudioFeatures -> Renderer.

The orchestration lives in services/edge/pipeline/ as a chain of stages (stage.py: the one
stage shape and its pump; stages.py: the stages; outcome.py: the one place that decides how
an utterance ends; watchdog.py: stalls and the live tail pad; utterance.py: the chain put
together). This module is the edge's entry point to it.
"""

from services.edge.pipeline.frames import (
    Frame,
    PcmTimeline,
    UtteranceConfig,
    UtteranceInterrupted,
)
from services.edge.pipeline.utterance import Utterance

__all__ = ["Frame", "PcmTimeline", "Utterance", "UtteranceConfig", "UtteranceInterrupted"]
