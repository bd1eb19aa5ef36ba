/* The edge's sound stream (application/vnd.synctalk.av-stream) arrives in arbitrary chunks;
 * this reassembles its messages: a 4-byte length, a JSON header, a 4-byte length, a payload. */

export class AvStreamReader {
  constructor() {
    this.buf = new Uint8Array(0);
    this.decoder = new TextDecoder();
  }

  /* Append a chunk; return the messages ({header, payload}) it completes. */
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
