"""Audio front end: PCM conversions, decoding, resampling, log-mel, feature windows."""
