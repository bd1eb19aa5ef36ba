/* The avatar's idle loop (GET /idle): its recorded head motion with the mouth closed, fetched
 * once per avatar and replayed by the player between utterances at no cost to the server.
 * Frames stay JPEG until shown (a decoded loop would take hundreds of MB). Each frame carries
 * the walk start (`next_start`) that speech takes to go on from it without a jump;
 * `resumeAfter` is where idling picks up after speech (the geometry of
 * synctalk/render/idle_loop.py). */

import { AvStreamReader } from "./av-stream.js";

const FRAME_MS = 40;

export class IdleLoop {
  constructor(sources, frames) {
    this.sources = sources; // source frames the loop walks, forward and back
    this.frames = frames; // [{blob, source, nextStart}] by loop position
  }

  static async load(avatar) {
    const response = await fetch(`/idle?avatar=${encodeURIComponent(avatar || "")}`);
    if (!response.ok) throw new Error(`idle loop: HTTP ${response.status}`);
    const messages = new AvStreamReader().push(new Uint8Array(await response.arrayBuffer()));
    const start = messages.find((m) => m.header.type === "start");
    const frames = messages.filter((m) => m.header.type === "frame").map(({ header, payload }) => ({
      blob: new Blob([payload.subarray(0, header.image_bytes)], { type: "image/jpeg" }),
      source: header.source_frame,
      nextStart: header.next_start,
    }));
    if (!start || !frames.length) throw new Error("idle loop: empty");
    return new IdleLoop(start.header.loop_sources, frames);
  }

  get length() {
    return this.frames.length;
  }

  frame(position) {
    return this.frames[((position % this.length) + this.length) % this.length];
  }

  /* The loop position to idle from after speech whose last frame showed `last`. */
  resumeAfter(last) {
    const m = this.sources;
    if (m <= 1 || last < 0) return 0;
    if (last < m - 1) return last + 1;
    if (last === m - 1) return m % this.length;
    return m - 1;
  }
}

/* Paints a loop at 25 frames/s on the wall clock, one frame decoded ahead. `shown` is the
 * position on the canvas (null once something else is painted there). */
export class IdlePlayer {
  constructor(canvas, g) {
    this.canvas = canvas;
    this.g = g;
    this.stats = { painted: 0, sources: [] }; // read by the tests
    this.setLoop(null);
  }

  setLoop(loop) {
    this.loop = loop;
    this.pos = 0; // the position painted next
    this.shown = null;
    this.due = null;
    this.decoding = null; // {position, bitmap}
  }

  resumeAfter(lastSource) {
    if (!this.loop) return;
    this.pos = this.loop.resumeAfter(lastSource);
    this.shown = null;
    this.due = null;
  }

  /* Paint the next frame when it is due; with `hold`, only until one frame is shown. */
  tick(t, hold) {
    if (!this.loop || (hold && this.shown !== null)) {
      this.due = null;
      return;
    }
    if (this.due !== null && t < this.due) return;
    const decoding = this.decoding;
    if (!decoding || decoding.position !== this.pos) {
      this.decode(this.pos);
      return;
    }
    if (!decoding.bitmap) return; // still decoding: the frame shown stays a little longer
    this.due = (this.due === null ? t : Math.max(this.due, t - FRAME_MS)) + FRAME_MS;
    const bitmap = decoding.bitmap;
    if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
      this.canvas.width = bitmap.width;
      this.canvas.height = bitmap.height;
    }
    this.g.drawImage(bitmap, 0, 0);
    bitmap.close();
    this.shown = this.pos;
    this.pos += 1;
    this.stats.painted += 1;
    this.stats.sources.push(this.loop.frame(this.shown).source);
    if (this.stats.sources.length > 100) this.stats.sources.shift();
    this.decode(this.pos);
  }

  decode(position) {
    const job = { position, bitmap: null };
    this.decoding = job;
    createImageBitmap(this.loop.frame(position).blob).then((bitmap) => {
      if (this.decoding === job) job.bitmap = bitmap;
      else bitmap.close();
    }, () => { if (this.decoding === job) this.pos += 1; });
  }
}
