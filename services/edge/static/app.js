/* SyncTalk 2D page: plays the edge's sound stream (application/vnd.synctalk.av-stream).
 *
 * Every frame arrives with the 640 samples (40 ms at 16 kHz) that play with it. The sound of
 * frame i is scheduled on the Web Audio clock at base + i * 40 ms; the picture of frame i is
 * painted by requestAnimationFrame once the audio clock (what the listener hears now, from
 * getOutputTimestamp) has reached that time. Lips and sound therefore share one clock. If the
 * stream falls behind, the whole schedule moves later (both picture and sound), so they stay
 * together. Figures: frames painted per second, time to first frame, dropped frames (pictures
 * replaced before they could be painted), A/V offset (moment a picture was painted minus the
 * moment its sound started, on the audio clock). They are shown in the debug panel, posted to
 * the server at the end of a stream, and kept in window.synctalk for tests.
 *
 * The Microphone tab streams the microphone to the edge's WebSocket /live (16 kHz s16le from
 * an AudioWorklet) and plays what comes back with the same player, scheduled for low delay
 * instead of by pts: each frame goes out right after the previous one, or a short jitter
 * buffer from now, and a frame that would wait more than LIVE_MAX_AHEAD_S is dropped, so the
 * delay cannot grow. Mouth-to-ear latency: the moment a frame is painted minus the moment
 * the page got the middle sample of the frame's 40 ms from the microphone.
 */
"use strict";

const FRAME_S = 0.04;
const LEAD_S = 0.15; // schedule the first frame this far ahead of the audio clock
const LEAD_STEP_S = 0.1; // each time the stream runs late, keep this much more in hand
const LEAD_MAX_S = 1.0;
const LIVE_LEAD_S = 0.08; // live: jitter buffer ahead of the audio clock
const LIVE_LEAD_MAX_S = 0.25;
const LIVE_MAX_AHEAD_S = 0.4; // live: a frame scheduled further ahead than this is dropped
const LIVE_CHUNK_S = 0.02; // microphone audio per WebSocket message
const $ = (id) => document.getElementById(id);

/* ---------------------------------------------------------------- stream parsing */

class AvStreamReader {
  constructor() {
    this.buf = new Uint8Array(0);
    this.decoder = new TextDecoder();
  }
  push(chunk) {
    const merged = new Uint8Array(this.buf.length + chunk.length);
    merged.set(this.buf, 0);
    merged.set(chunk, this.buf.length);
    this.buf = merged;
    const out = [];
    let pos = 0;
    const view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    while (this.buf.length - pos >= 4) {
      const headLen = view.getUint32(pos);
      if (this.buf.length - pos < 8 + headLen) break;
      const bodyLen = view.getUint32(pos + 4 + headLen);
      const end = pos + 8 + headLen + bodyLen;
      if (this.buf.length < end) break;
      const header = JSON.parse(this.decoder.decode(this.buf.subarray(pos + 4, pos + 4 + headLen)));
      out.push({ header, payload: this.buf.slice(pos + 8 + headLen, end) });
      pos = end;
    }
    this.buf = this.buf.slice(pos);
    return out;
  }
}

/* ---------------------------------------------------------------- figures */

function newStats() {
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

/* ---------------------------------------------------------------- player */

class Player {
  constructor(canvas) {
    this.canvas = canvas;
    this.g = canvas.getContext("2d");
    this.ctx = null;
    this.gain = null;
    this.queue = [];
    this.sources = new Set();
    this.base = null;
    this.lead = LEAD_S;
    this.firstPts = 0;
    this.abort = null;
    this.stats = newStats();
    this.generation = 0;
    this.idle = null; // the avatar's still frame (closed mouth), shown whenever speech stops
    this.stoppedAt = null;
    this.live = null; // the LiveMic feeding this player, if any
    this.onPaint = null; // hook (tests): called with each painted frame
    requestAnimationFrame((t) => this.tick(t));
  }

  audio() {
    if (!this.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      try {
        this.ctx = new Ctx({ sampleRate: 16000, latencyHint: "interactive" });
      } catch (e) {
        this.ctx = new Ctx({ latencyHint: "interactive" });
      }
      this.gain = this.ctx.createGain();
      this.gain.connect(this.ctx.destination);
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 512;
      this.gain.connect(this.analyser);
    }
    if (this.ctx.state === "suspended") this.ctx.resume();
    return this.ctx;
  }

  /* What the listener hears now, on the audio clock. */
  heardNow() {
    const ctx = this.ctx;
    if (!ctx) return 0;
    if (ctx.getOutputTimestamp) {
      const ts = ctx.getOutputTimestamp();
      if (ts && ts.contextTime > 0 && ts.performanceTime > 0) {
        return ts.contextTime + (performance.now() - ts.performanceTime) / 1000;
      }
    }
    return ctx.currentTime - (ctx.outputLatency || ctx.baseLatency || 0);
  }

  /* The RMS level of what the speakers play now (0 when silent). */
  level() {
    if (!this.analyser) return 0;
    const data = new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    return Math.sqrt(sum / data.length);
  }

  showIdle() {
    if (!this.idle) return;
    if (this.canvas.width !== this.idle.naturalWidth || this.canvas.height !== this.idle.naturalHeight) {
      this.canvas.width = this.idle.naturalWidth;
      this.canvas.height = this.idle.naturalHeight;
    }
    this.g.drawImage(this.idle, 0, 0);
  }

  /* Barge-in and Stop: silence every scheduled sound and go back to the idle picture at
   * once, without waiting for the server to wind the stream down. */
  stop(reason) {
    const speaking = this.sources.size > 0 || this.queue.length > 0;
    this.generation += 1;
    if (this.abort) this.abort.abort(reason || "stopped");
    this.abort = null;
    for (const src of this.sources) {
      try { src.stop(); } catch (e) { /* already stopped */ }
    }
    this.sources.clear();
    for (const f of this.queue) if (f.bitmap) f.bitmap.close();
    this.queue = [];
    this.base = null;
    if (speaking) {
      this.stoppedAt = performance.now();
      this.showIdle();
    }
  }

  async play(url, init, onStart) {
    this.stop("replaced");
    const generation = this.generation;
    const ctx = this.audio();
    const stats = (this.stats = newStats());
    stats.requested = performance.now();
    stats.status = "requesting";
    this.abort = new AbortController();
    const response = await fetch(url, { ...init, signal: this.abort.signal });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      if (typeof detail !== "string") detail = JSON.stringify(detail);
      stats.status = "error";
      stats.error = `${response.status}: ${detail}`;
      throw new Error(stats.error);
    }
    stats.session = response.headers.get("X-Session-Id");
    if (onStart) onStart(stats.session);
    const reader = response.body.getReader();
    const parser = new AvStreamReader();
    stats.status = "streaming";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || generation !== this.generation) break;
        for (const msg of parser.push(value)) this.handle(msg, ctx, stats);
      }
    } catch (e) {
      if (generation !== this.generation) return stats;
      throw e;
    }
    await this.drained(generation);
    return stats;
  }

  handle({ header, payload }, ctx, stats) {
    if (header.type === "start") {
      stats.live = Boolean(header.live);
      if (header.session_id) stats.session = header.session_id;
      if (this.canvas.width !== header.width || this.canvas.height !== header.height) {
        this.canvas.width = header.width;
        this.canvas.height = header.height;
      }
      return;
    }
    if (header.type === "end") {
      stats.status = header.status;
      stats.resultUrl = header.result_url || null;
      if (header.status === "error") stats.error = header.error;
      return;
    }
    if (header.type !== "frame") return;
    stats.received += 1;
    const image = payload.subarray(0, header.image_bytes);
    const pcm = payload.subarray(header.image_bytes, header.image_bytes + header.audio_bytes);
    const now = ctx.currentTime;
    if (stats.live) {
      this.handleLive(header, image, pcm, now, stats);
      return;
    }
    if (this.base === null) {
      this.lead = LEAD_S;
      this.base = now + this.lead;
      this.firstPts = header.pts_ms;
    }
    let when = this.base + (header.pts_ms - this.firstPts) / 1000;
    if (when < now + 0.01) {
      // The stream fell behind the clock: move the whole schedule later, picture and sound
      // alike, and keep a little more in hand from now on (a growing jitter buffer).
      this.lead = Math.min(LEAD_MAX_S, this.lead + LEAD_STEP_S);
      const shift = now + this.lead - when;
      this.base += shift;
      for (const f of this.queue) f.when += shift;
      when += shift;
      stats.rebuffers += 1;
    }
    this.enqueue(header, image, pcm, when, stats);
  }

  /* Live input: play each frame right after the previous one, or LIVE_LEAD_S from now if the
   * stream ran dry (then keep a little more in hand); drop it if that is too far ahead. */
  handleLive(header, image, pcm, now, stats) {
    stats.edgeDropped = header.dropped || 0;
    stats.edgeLagMs = header.lag_ms === undefined ? null : header.lag_ms;
    if (this.base === null) this.lead = LIVE_LEAD_S;
    let when = this.base === null ? now + this.lead : this.base + FRAME_S;
    if (when < now + 0.01) {
      if (this.base !== null) {
        this.lead = Math.min(LIVE_LEAD_MAX_S, this.lead + 0.02);
        stats.rebuffers += 1;
      }
      when = now + this.lead;
    }
    if (when > now + LIVE_MAX_AHEAD_S) {
      stats.dropped += 1;
      return;
    }
    this.base = when;
    this.enqueue(header, image, pcm, when, stats);
  }

  enqueue(header, image, pcm, when, stats) {
    const frame = {
      index: header.index, when, bitmap: null, ready: false, sourceFrame: header.source_frame,
      inputSample: header.input_sample === undefined ? null : header.input_sample, rms: 0,
    };
    this.queue.push(frame);
    createImageBitmap(new Blob([image], { type: "image/jpeg" })).then((bitmap) => {
      frame.bitmap = bitmap;
      frame.ready = true;
    }, () => { frame.ready = true; });
    frame.rms = this.schedule(this.ctx, pcm, when, stats);
  }

  schedule(ctx, pcm, when, stats) {
    const n = pcm.length >> 1;
    const view = new DataView(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    const samples = new Float32Array(n);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      samples[i] = view.getInt16(2 * i, true) / 32768;
      sum += samples[i] * samples[i];
    }
    const buffer = ctx.createBuffer(1, n, 16000);
    buffer.copyToChannel(samples, 0);
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.gain);
    src.onended = () => {
      this.sources.delete(src);
      stats.audioEnded += 1;
    };
    this.sources.add(src);
    src.start(when);
    stats.audioStarted += 1;
    return n ? Math.sqrt(sum / n) : 0;
  }

  tick(t) {
    requestAnimationFrame((tt) => this.tick(tt));
    if (!this.ctx || !this.queue.length) return;
    const heard = this.heardNow();
    let show = null;
    while (this.queue.length && this.queue[0].when <= heard) {
      const next = this.queue[0];
      if (!next.ready) break;
      this.queue.shift();
      if (show) {
        if (show.bitmap) show.bitmap.close();
        this.stats.dropped += 1;
      }
      show = next;
    }
    if (!show) return;
    const stats = this.stats;
    if (show.bitmap) {
      this.g.drawImage(show.bitmap, 0, 0, this.canvas.width, this.canvas.height);
      show.bitmap.close();
    }
    stats.painted += 1;
    stats.offsets.push((heard - show.when) * 1000);
    stats.paintTimes.push(t);
    const painted = performance.now();
    if (stats.live && this.live && show.inputSample !== null) {
      const captured = this.live.capturedAt(show.inputSample + 320); // the frame's middle
      if (captured !== null) {
        stats.latencies.push(painted - captured);
        if (stats.latencies.length > 1500) stats.latencies.shift();
      }
    }
    if (this.onPaint) this.onPaint({ ...show, painted, canvas: this.canvas });
    if (stats.firstFrameMs === null) stats.firstFrameMs = performance.now() - stats.requested;
  }

  async drained(generation) {
    while (generation === this.generation && (this.queue.length || this.sources.size)) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  figures() {
    const s = this.stats;
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
      buffered_ms: this.queue.length ? (this.queue[this.queue.length - 1].when - this.heardNow()) * 1000 : 0,
      result_url: s.resultUrl,
      error: s.error,
      rebuffers: s.rebuffers,
      audio_state: this.ctx ? this.ctx.state : "none",
      live: s.live,
      latency_ms: quantile(s.latencies.slice(-250), 0.5),
      latency_p95_ms: quantile(s.latencies.slice(-250), 0.95),
      latencies: s.latencies.length,
      edge_dropped: s.edgeDropped,
      edge_lag_ms: s.edgeLagMs,
    };
  }
}

/* ---------------------------------------------------------------- live microphone */

/* The microphone to the edge's WebSocket /live, its frames to the player. `start` throws an
 * Error with a message for the user when the microphone is denied or missing. */
class LiveMic {
  constructor(player, onEnd) {
    this.player = player;
    this.onEnd = onEnd;
    this.ws = null;
    this.stream = null;
    this.node = null;
    this.source = null;
    this.sink = null;
    this.level = 0;
    this.sent = 0; // samples sent, at 16 kHz
    this.captures = []; // [first sample, last sample + 1, performance.now() when got]
    this.generation = -1;
    this.workletLoaded = false;
  }

  get running() {
    return this.ws !== null;
  }

  /* When the page got input sample `sample` (16 kHz count) from the microphone. */
  capturedAt(sample) {
    const c = this.captures;
    while (c.length > 1 && c[0][1] <= sample) c.shift();
    for (const [from, to, t] of c) {
      if (sample >= from && sample < to) return t - ((to - sample) / 16000) * 1000;
    }
    return null;
  }

  async start(avatar, monitor) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("This browser gives no microphone access here (it needs https or localhost).");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      if (e.name === "NotAllowedError" || e.name === "SecurityError") {
        throw new Error("Microphone access was denied: allow it in the browser's site settings, then press Start again.");
      }
      if (e.name === "NotFoundError" || e.name === "OverconstrainedError" || e.name === "NotReadableError") {
        throw new Error("No usable microphone was found: connect one (or free it from another app), then press Start again.");
      }
      throw new Error(`The microphone could not be opened: ${e.message || e.name}`);
    }
    const player = this.player;
    player.stop("replaced");
    const ctx = player.audio();
    if (!this.workletLoaded) {
      await ctx.audioWorklet.addModule("/static/mic-worklet.js");
      this.workletLoaded = true;
    }
    this.stream = stream;
    this.sent = 0;
    this.captures = [];
    this.generation = player.generation;
    const generation = this.generation;
    player.live = this;
    player.gain.gain.value = monitor ? 1 : 0;
    const stats = (player.stats = newStats());
    stats.requested = performance.now();
    stats.status = "connecting";
    const rate = ctx.sampleRate;
    this.source = ctx.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(ctx, "mic-capture", {
      processorOptions: { chunk: Math.round(rate * LIVE_CHUNK_S) },
    });
    this.sink = ctx.createGain();
    this.sink.gain.value = 0; // keeps the worklet pulled by the graph, silently
    this.source.connect(this.node);
    this.node.connect(this.sink);
    this.sink.connect(ctx.destination);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = (this.ws = new WebSocket(`${scheme}://${location.host}/live`));
    ws.binaryType = "arraybuffer";
    const parser = new AvStreamReader();
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "config", sample_rate: rate, avatar }));
      stats.status = "streaming";
    };
    ws.onmessage = (ev) => {
      if (generation !== player.generation) return;
      for (const msg of parser.push(new Uint8Array(ev.data))) player.handle(msg, ctx, stats);
    };
    ws.onclose = (ev) => { // the edge ended the session (Stop detaches this handler)
      if (this.ws !== ws) return;
      this.release();
      stats.status = ev.code === 1000 ? "complete" : "error";
      if (ev.code !== 1000) stats.error = `${ev.code}: ${ev.reason || "connection lost"}`;
      if (this.onEnd) this.onEnd(stats, false);
    };
    this.node.port.onmessage = (ev) => {
      this.level = ev.data.rms;
      if (ws.readyState !== WebSocket.OPEN) return;
      const n = ev.data.pcm.byteLength / 2;
      const from = this.sent;
      this.sent += (n * 16000) / rate;
      this.captures.push([from, this.sent, performance.now()]);
      if (this.captures.length > 1000) this.captures.shift();
      ws.send(ev.data.pcm);
    };
  }

  setMonitor(on) {
    if (this.running && this.player.gain) this.player.gain.gain.value = on ? 1 : 0;
  }

  /* Stop: close the socket (the edge ends the session) and silence the avatar at once. */
  stop() {
    if (!this.running) return;
    const ws = this.ws;
    const stats = this.player.stats;
    ws.onclose = null;
    this.release();
    this.player.stop("stopped");
    try { ws.close(1000, "stopped"); } catch (e) { /* already closed */ }
    stats.status = "cancelled";
    if (this.onEnd) this.onEnd(stats, true);
  }

  release() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    for (const node of [this.source, this.node, this.sink]) {
      if (node) try { node.disconnect(); } catch (e) { /* not connected */ }
    }
    if (this.node) this.node.port.onmessage = null;
    this.stream = this.source = this.node = this.sink = null;
    this.ws = null;
    this.level = 0;
    if (this.player.live === this) this.player.live = null;
    if (this.player.gain) this.player.gain.gain.value = 1;
  }
}

/* ---------------------------------------------------------------- page wiring */

const player = new Player($("stage"));
let sessionId = null;
const mic = new LiveMic(player, micEnded);
window.synctalk = { player, mic, figures: () => player.figures(), runs: 0, done: 0 };

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}

/* Speak and Animate stay enabled while the avatar speaks: pressing them interrupts it
 * (barge-in); the session id goes with the new request so the server stops the old one. */
let running = 0;
function busy(on) {
  running += on ? 1 : -1;
  $("stop").disabled = running === 0;
  $("stop-audio").disabled = running === 0;
  $("mic-stop").disabled = running === 0;
}

function fmt(x, digits, unit) {
  return x === null || x === undefined || Number.isNaN(x) ? "-" : `${x.toFixed(digits)}${unit || ""}`;
}

function showFigures() {
  const f = player.figures();
  // While streaming: pictures painted in the last second; afterwards: the stream's average.
  const fps = f.status === "streaming" ? f.fps_now : f.fps;
  $("fig-fps").textContent = f.painted ? fmt(fps, f.status === "streaming" ? 0 : 1) : "-";
  $("fig-ttff").textContent = fmt(f.time_to_first_frame_ms, 0, " ms");
  $("fig-frames").textContent = `${f.received} / ${f.painted}`;
  $("fig-dropped").textContent = `${f.dropped}`;
  $("fig-offset").textContent = f.av_offset_ms === null ? "-"
    : `${fmt(f.av_offset_ms, 1, " ms")} (worst ${fmt(f.av_offset_max_ms, 0)})`;
  $("fig-buffer").textContent = fmt(Math.max(0, f.buffered_ms), 0, " ms");
  $("fig-latency").textContent = f.latency_ms === null ? "-"
    : `${fmt(f.latency_ms, 0, " ms")} (p95 ${fmt(f.latency_p95_ms, 0)})`;
  $("fig-edge-dropped").textContent = f.live ? `${f.edge_dropped}` : "-";
  $("fig-session").textContent = f.session ? f.session.slice(0, 8) + "…" : "-";
  $("fig-session").title = f.session || "";
}
setInterval(showFigures, 250);

async function reportFigures(stats) {
  if (player.stats !== stats) return; // a newer run replaced this one
  const f = player.figures();
  if (!stats.session || !f.painted) return;
  try {
    await fetch(`/sessions/${stats.session}/stats`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        av_offset_ms: f.av_offset_ms, fps: f.fps, dropped_frames: f.dropped,
        time_to_first_frame_ms: f.time_to_first_frame_ms,
      }),
    });
  } catch (e) { /* figures are best effort */ }
}

/* `makeRequest(sid)` gives [url, init]; a session the server no longer knows (it restarted,
 * or the session expired) is dropped and the request made once more without it. */
async function run(makeRequest) {
  mic.stop(); // barge-in on the live microphone too
  window.synctalk.runs += 1;
  $("download").hidden = true;
  busy(true);
  setStatus("Starting…");
  try {
    let stats;
    try {
      stats = await player.play(...makeRequest(sessionId), onStarted);
    } catch (e) {
      if (!sessionId || !String(e.message).includes("unknown session")) throw e;
      sessionId = null;
      stats = await player.play(...makeRequest(null), onStarted);
    }
    if (player.stats !== stats) return; // interrupted by a newer run, which reports itself
    if (stats.status === "complete") {
      setStatus(`Done: ${stats.painted} frames.`, "ok");
      if (stats.resultUrl) {
        $("download").href = stats.resultUrl;
        $("download").hidden = false;
      }
    } else if (stats.status === "interrupted" || stats.status === "cancelled") {
      setStatus("Interrupted.");
    } else if (stats.status === "error") {
      setStatus(`Stopped: ${stats.error}`, "error");
    }
    await reportFigures(stats);
  } catch (e) {
    if (e.name === "AbortError") setStatus("Stopped.");
    else setStatus(e.message || String(e), "error");
  } finally {
    busy(false);
    window.synctalk.done += 1;
    showFigures();
  }
}

function onStarted(sid) {
  sessionId = sid;
  setStatus("Speaking…");
}

function speak() {
  const body = JSON.stringify({ text: $("text").value, voice: $("voice").value, avatar: $("avatar").value });
  run((sid) => {
    const params = new URLSearchParams({ format: "av" });
    if (sid) params.set("session_id", sid);
    return [`/generate?${params}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    }];
  });
}

function animateFile() {
  const file = $("file").files[0];
  if (!file) {
    setStatus("Choose an audio file first.", "error");
    return;
  }
  run((sid) => {
    const form = new FormData();
    form.append("audio_file", file, file.name);
    const params = new URLSearchParams({ format: "av", avatar: $("avatar").value });
    if (sid) params.set("session_id", sid);
    return [`/generate-from-audio?${params}`, { method: "POST", body: form }];
  });
}

async function stop() {
  if (mic.running) {
    mic.stop();
    return;
  }
  const sid = sessionId;
  player.stop("stopped");
  if (sid) {
    try { await fetch(`/sessions/${sid}/cancel`, { method: "POST" }); } catch (e) { /* gone */ }
  }
  setStatus("Stopped.");
}

function selectTab(which) {
  for (const name of ["text", "audio", "mic"]) {
    const on = name === which;
    $(`tab-${name}`).classList.toggle("active", on);
    $(`tab-${name}`).setAttribute("aria-selected", String(on));
    $(`panel-${name}`).hidden = !on;
  }
}

async function startMic() {
  if (mic.running) return;
  window.synctalk.runs += 1;
  $("download").hidden = true;
  setStatus("Opening the microphone…");
  try {
    await mic.start($("avatar").value, $("mic-monitor").checked);
  } catch (e) {
    setStatus(e.message || String(e), "error");
    window.synctalk.done += 1;
    return;
  }
  busy(true);
  $("mic-start").disabled = true;
  setStatus("Listening: talk, and the avatar speaks with your voice.");
}

function micEnded(stats, userStopped) {
  busy(false);
  $("mic-start").disabled = false;
  $("mic-level").style.width = "0";
  if (userStopped) setStatus("Stopped.");
  else if (stats.status === "error") setStatus(`Live session ended: ${stats.error}`, "error");
  else setStatus("Live session ended.");
  window.synctalk.done += 1;
  showFigures();
}

setInterval(() => {
  if (mic.running) $("mic-level").style.width = `${Math.min(100, Math.sqrt(mic.level) * 180).toFixed(0)}%`;
}, 60);

async function loadChoices() {
  try {
    const [voices, avatars] = await Promise.all([
      fetch("/voices").then((r) => r.json()),
      fetch("/avatars").then((r) => r.json()),
    ]);
    for (const v of voices.voices || []) {
      const opt = new Option(`${v.id} (${v.engine})`, v.id, v.default, v.default);
      $("voice").add(opt);
    }
    for (const a of avatars.avatars || []) {
      const opt = new Option(a.name, a.name, a.name === avatars.default, a.name === avatars.default);
      $("avatar").add(opt);
    }
  } catch (e) {
    setStatus("Could not list voices and avatars; is the server up?", "error");
  }
  drawStill();
}

function drawStill() {
  const img = new Image();
  img.onload = () => {
    player.idle = img;
    player.showIdle();
  };
  img.src = `/avatar?avatar=${encodeURIComponent($("avatar").value || "")}`;
}

/* ---------------------------------------------------------------- debug panel */

async function loadDebug() {
  try {
    const r = await fetch("/debug/status");
    const d = await r.json();
    const off = !r.ok;
    for (const id of ["dbg-enabled", "dbg-frames", "dbg-audio"]) $(id).disabled = off;
    $("dbg-note").hidden = !off;
    if (off) { $("dbg-note").textContent = d.detail; return; }
    $("dbg-enabled").checked = d.enabled;
    $("dbg-frames").checked = d.save_frames;
    $("dbg-audio").checked = d.save_audio;
    $("dbg-frames-dir").textContent = d.frames_dir;
    $("dbg-audio-dir").textContent = d.audio_dir;
  } catch (e) { /* server down: the health list says so */ }
}

async function saveDebug() {
  const body = {
    enabled: $("dbg-enabled").checked,
    save_frames: $("dbg-frames").checked,
    save_audio: $("dbg-audio").checked,
  };
  const r = await fetch("/debug/config", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (r.ok) setStatus("Debug settings updated.", "ok");
  else setStatus(`Debug settings refused (${r.status}).`, "error");
  loadDebug();
}

async function loadHealth() {
  try {
    const h = await (await fetch("/health")).json();
    const list = $("health");
    list.replaceChildren();
    for (const [name, state] of Object.entries(h.services)) {
      const li = document.createElement("li");
      li.className = state === "ok" ? "ok" : "bad";
      li.textContent = `${name}: ${state}`;
      list.append(li);
    }
  } catch (e) { /* retried on the next tick */ }
}

$("speak").addEventListener("click", speak);
$("upload").addEventListener("click", animateFile);
$("stop").addEventListener("click", stop);
$("stop-audio").addEventListener("click", stop);
$("tab-text").addEventListener("click", () => selectTab("text"));
$("tab-audio").addEventListener("click", () => selectTab("audio"));
$("tab-mic").addEventListener("click", () => selectTab("mic"));
$("mic-start").addEventListener("click", startMic);
$("mic-stop").addEventListener("click", stop);
$("mic-monitor").addEventListener("change", () => mic.setMonitor($("mic-monitor").checked));
window.addEventListener("pagehide", () => mic.stop());
$("avatar").addEventListener("change", drawStill);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) speak();
});
for (const id of ["dbg-enabled", "dbg-frames", "dbg-audio"]) $(id).addEventListener("change", saveDebug);
$("debug").addEventListener("toggle", () => { if ($("debug").open) { loadDebug(); loadHealth(); } });

loadChoices();
loadDebug();
loadHealth();
setInterval(() => { if ($("debug").open) loadHealth(); }, 5000);
