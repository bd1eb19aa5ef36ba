"""Prometheus metrics of the edge, served at GET /metrics.

Each edge instance owns its registry (several edges can live in one test process).
Server-side figures: frames, time to first frame, the renderer round trip per frame, how far
behind real time an MJPEG frame leaves, active sessions, fallbacks, downstream failures.
The A/V offset, frame rate and dropped frames at the player are measured by the page and
posted to /sessions/{id}/stats, which feeds the `player_*` metrics.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
_OFFSET_BUCKETS = (-0.2, -0.1, -0.04, -0.02, -0.01, 0.0, 0.01, 0.02, 0.04, 0.1, 0.2)


class EdgeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.frames = Counter("synctalk_edge_frames", "Frames sent to clients", ["input"],
                              registry=r)
        self.utterances = Counter("synctalk_edge_utterances", "Utterances by input and outcome",
                                  ["input", "outcome"], registry=r)
        self.time_to_first_frame = Histogram(
            "synctalk_edge_time_to_first_frame_seconds",
            "Request received -> first lip-synced frame ready", ["input"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.frame_latency = Histogram(
            "synctalk_edge_frame_latency_seconds",
            "Feature frame sent to the renderer -> its video frame back at the edge",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.stream_lag = Histogram(
            "synctalk_edge_stream_lag_seconds",
            "How late a real-time paced (MJPEG) frame left relative to its presentation time",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.active_sessions = Gauge("synctalk_edge_active_sessions",
                                     "Sessions streaming right now", registry=r)
        self.fallbacks = Counter("synctalk_edge_fallbacks",
                                 "Degraded paths taken (e.g. espeak-ng instead of piper)",
                                 ["kind"], registry=r)
        self.downstream_errors = Counter("synctalk_edge_downstream_errors",
                                         "Utterances ended by a failing service",
                                         ["service", "code"], registry=r)
        self.player_av_offset = Histogram(
            "synctalk_edge_player_av_offset_seconds",
            "Picture minus sound at the player, as measured by the page (positive: picture late)",
            buckets=_OFFSET_BUCKETS, registry=r)
        self.player_fps = Histogram(
            "synctalk_edge_player_frames_per_second", "Frames painted per second at the player",
            buckets=(5, 10, 15, 20, 23, 24, 25, 26, 30), registry=r)
        self.live_dropped = Counter(
            "synctalk_edge_live_dropped_frames",
            "Live (WebSocket /live) frames dropped to keep the delay bounded: 'late' from the "
            "renderer, or 'stale' (never made: the renderer fell behind and the utterance "
            "was restarted)", ["reason"], registry=r)
        self.player_dropped = Counter("synctalk_edge_player_dropped_frames",
                                      "Frames the player skipped (arrived too late)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
