/* Microphone capture for the live tab: mono s16le chunks at the context's rate (16 kHz when
 * the browser grants the page's 16 kHz AudioContext, which resamples the microphone itself),
 * posted with the chunk's RMS level for the meter. Runs on the audio thread. */
"use strict";

class MicCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions.chunk;
    this.buf = new Int16Array(this.chunk);
    this.n = 0;
    this.sum = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true;
    const a = input[0];
    const b = input.length > 1 ? input[1] : null;
    for (let i = 0; i < a.length; i++) {
      const v = Math.max(-1, Math.min(1, b ? (a[i] + b[i]) / 2 : a[i]));
      this.buf[this.n++] = v < 0 ? v * 32768 : v * 32767;
      this.sum += v * v;
      if (this.n === this.chunk) {
        this.port.postMessage({ pcm: this.buf.buffer, rms: Math.sqrt(this.sum / this.chunk) },
          [this.buf.buffer]);
        this.buf = new Int16Array(this.chunk);
        this.n = 0;
        this.sum = 0;
      }
    }
    return true;
  }
}

registerProcessor("mic-capture", MicCapture);
