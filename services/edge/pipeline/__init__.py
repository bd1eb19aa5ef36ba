"""One utterance as a chain of stages: input -> TTS -> AudioFeatures -> Renderer -> frames."""
