/* The player: plays the edge's sound stream (application/vnd.synctalk.av-stream).
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
 * Live input (the Microphone tab) is scheduled for low delay instead of by pts: each frame
 * goes out right after the previous one, or a short jitter buffer from now, and a frame that
 * would wait more than LIVE_MAX_AHEAD_S is dropped, so the delay cannot grow. Mouth-to-ear
 * latency: the moment a frame is painted minus the moment the page got the middle sample of
 * the frame's 40 ms from the microphone.
 *
 * Between utterances the player shows the avatar's idle loop (idle-loop.js) at 25 frames/s on
 * the wall clock. While a request is on its way the idle frame shown waits (after barge-in,
 * the next idle frame is shown and waits); speech starts at the walk start that frame names
 * (`startFrame`, sent with the request), and idling resumes next to the last speech frame
 * painted, so neither hand-over jumps.
 */

import { AvStreamReader } from "./av-stream.js";
import { newStats, summarize } from "./figures.js";
import { IdlePlayer } from "./idle-loop.js";

const FRAME_S = 0.04;
const LEAD_S = 0.15; // schedule the first frame this far ahead of the audio clock
const LEAD_STEP_S = 0.1; // each time the stream runs late, keep this much more in hand
const LEAD_MAX_S = 1.0;
const LIVE_LEAD_S = 0.08; // live: jitter buffer ahead of the audio clock
const LIVE_LEAD_MAX_S = 0.25;
const LIVE_MAX_AHEAD_S = 0.4; // live: a frame scheduled further ahead than this is dropped

export class Player {
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
    this.idle = null; // the avatar's still frame, shown when speech stops and there is no loop
    this.idler = new IdlePlayer(canvas, this.g); // the idle loop, played whenever speech stops
    this.holding = false; // a request is on its way: the idle frame shown waits for speech
    this.lastSource = -1; // avatar source frame of the last speech frame painted
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

  get idleLoop() {
    return this.idler.loop;
  }

  get idleShown() {
    return this.idler.shown;
  }

  get idleStats() {
    return this.idler.stats;
  }

  setIdleLoop(loop) {
    this.idler.setLoop(loop);
  }

  speaking() {
    return this.queue.length > 0 || this.sources.size > 0;
  }

  /* The walk start for speech that begins now: after the idle frame on the canvas, or, while
   * a speech frame is there, after the idle frame painted next (a request on its way shows
   * one idle frame, closed mouth, and holds it). Null without a loop: the server goes on
   * from the session's last utterance. */
  startFrame() {
    const idler = this.idler;
    if (!idler.loop) return null;
    const shown = idler.shown !== null && !this.speaking() ? idler.shown : idler.pos;
    return idler.loop.frame(shown).nextStart;
  }

  /* The request is over: idle on (from the frame after the last speech frame painted). */
  resumeIdle() {
    this.holding = false;
    this.idler.due = null;
  }

  showIdle() {
    if (this.idler.loop) return; // the loop paints itself
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
    this.resumeIdle();
  }

  async play(url, init, onStart) {
    this.stop("replaced");
    this.holding = true;
    const generation = this.generation;
    try {
      return await this.stream(url, init, onStart, generation);
    } finally {
      if (generation === this.generation) this.resumeIdle();
    }
  }

  async stream(url, init, onStart, generation) {
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
    if (!this.ctx || !this.queue.length) {
      if (!this.live && !this.sources.size) this.idler.tick(t, this.holding);
      return;
    }
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
    this.lastSource = show.sourceFrame;
    this.idler.resumeAfter(show.sourceFrame); // idling goes on next to this frame
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
    const buffered = this.queue.length
      ? (this.queue[this.queue.length - 1].when - this.heardNow()) * 1000 : 0;
    return summarize(this.stats, buffered, this.ctx ? this.ctx.state : "none");
  }
}
