/* The Microphone tab's transport: streams the microphone to the edge's WebSocket /live
 * (16 kHz s16le from the AudioWorklet in mic-worklet.js) and hands what comes back to the
 * player, which schedules it for low delay (player.js). It also remembers when each input
 * sample arrived, for the mouth-to-ear latency. */

import { AvStreamReader } from "./av-stream.js";
import { newStats } from "./figures.js";

const LIVE_CHUNK_S = 0.02; // microphone audio per WebSocket message

/* `start` throws an Error with a message for the user when the microphone is denied or
 * missing. */
export class LiveMic {
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
    const startFrame = player.startFrame();
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
      const config = { type: "config", sample_rate: rate, avatar };
      if (startFrame !== null) config.start_frame = startFrame;
      ws.send(JSON.stringify(config));
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
    if (this.player.live === this) {
      this.player.live = null;
      this.player.resumeIdle();
    }
    if (this.player.gain) this.player.gain.gain.value = 1;
  }
}
