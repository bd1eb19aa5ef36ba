/* A stream's figures: what the player counts while it plays (newStats) and the summary the
 * debug panel shows, the page posts to the server and the tests read (summarize). */

export function newStats() {
  return {
    session: null, requested: 0, firstFrameMs: null, received: 0, painted: 0, dropped: 0,
    offsets: [], audioStarted: 0, audioEnded: 0, paintTimes: [], status: "idle",
    resultUrl: null, error: null, rebuffers: 0, live: false, latencies: [], edgeDropped: 0,
    edgeLagMs: null,
  };
}

function quantile(xs, q) {
  if (!xs.length) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function mean(xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

/* `bufferedMs`: how far the last queued picture is ahead of what is heard now;
 * `audioState`: the AudioContext's state ("none" before there is one). */
export function summarize(s, bufferedMs, audioState) {
  const recent = s.paintTimes.filter((t) => t > performance.now() - 1000);
  const span = s.paintTimes.length > 1
    ? (s.paintTimes[s.paintTimes.length - 1] - s.paintTimes[0]) / 1000 : 0;
  return {
    session: s.session,
    status: s.status,
    fps_now: recent.length,
    fps: span > 0 ? (s.paintTimes.length - 1) / span : null,
    time_to_first_frame_ms: s.firstFrameMs,
    received: s.received,
    painted: s.painted,
    dropped: s.dropped,
    av_offset_ms: mean(s.offsets),
    av_offset_max_ms: s.offsets.length ? Math.max(...s.offsets.map(Math.abs)) : null,
    audio_started: s.audioStarted,
    audio_ended: s.audioEnded,
    buffered_ms: bufferedMs,
    result_url: s.resultUrl,
    error: s.error,
    rebuffers: s.rebuffers,
    audio_state: audioState,
    live: s.live,
    latency_ms: quantile(s.latencies.slice(-250), 0.5),
    latency_p95_ms: quantile(s.latencies.slice(-250), 0.95),
    latencies: s.latencies.length,
    edge_dropped: s.edgeDropped,
    edge_lag_ms: s.edgeLagMs,
  };
}
