// AudioWorklet: gapless playback of one reply at a time, from a small jitter buffer.
//
// Messages in:  {type: "start", key, rate}   a turn's reply audio follows, s16le mono at `rate`
//               {type: "pcm", key, pcm}      a piece of it (ArrayBuffer)
//               {type: "end", key}           no more audio for this turn: play out what is left
//               {type: "clear", key}         stop this turn now and drop what is buffered
//               {type: "reset"}              drop everything without a report (connection gone)
// Messages out: {type: "first", key}                the turn's first sample was output just now
//               {type: "progress", key, played, underruns}  samples of the turn played so far (at its
//                                                   own rate), and how often the buffer ran dry
//               {type: "drained", key, played, underruns}   played to the end
//               {type: "cleared", key, played, underruns}   emptied by "clear" (played is null if the
//                                                   turn was no longer held)
// Reply audio arrives faster than real time, so the buffer only runs dry between slow phrases; after
// a dry spell playback waits for a little audio again rather than stuttering sample by sample.

const START_BUFFER_S = 0.06;
const REFILL_BUFFER_S = 0.04;
const PROGRESS_EVERY_S = 0.05;

class ReplyPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.key = null;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    switch (message.type) {
      case "start":
        if (this.key !== null && this.key !== message.key) this.finish("cleared");
        this.begin(message.key, message.rate);
        break;
      case "pcm":
        if (message.key === this.key) this.push(message.pcm);
        break;
      case "end":
        if (message.key === this.key) this.ended = true;
        break;
      case "clear":
        if (message.key === this.key) this.finish("cleared");
        else this.port.postMessage({ type: "cleared", key: message.key, played: null });
        break;
      case "reset":
        this.key = null;
        this.chunks = [];
        break;
      default:
        break;
    }
  }

  begin(key, rate) {
    this.key = key;
    this.step = rate / sampleRate; // source samples per output sample
    this.chunks = [];
    this.offset = 0; // read position in chunks[0]
    this.queued = 0;
    this.played = 0;
    this.underruns = 0;
    this.ended = false;
    this.started = false;
    this.waitFor = Math.ceil(START_BUFFER_S * rate);
    this.buffering = true;
    this.phase = 1; // resampling: position between the samples `before` and `after`
    this.before = 0;
    this.after = 0;
    this.sinceProgress = 0;
  }

  push(buffer) {
    const view = new DataView(buffer);
    const samples = new Float32Array(buffer.byteLength >> 1);
    for (let i = 0; i < samples.length; i += 1) samples[i] = view.getInt16(i * 2, true) / 32768;
    if (samples.length === 0) return;
    this.chunks.push(samples);
    this.queued += samples.length;
  }

  pop() {
    const chunk = this.chunks[0];
    const sample = chunk[this.offset];
    this.offset += 1;
    if (this.offset === chunk.length) {
      this.chunks.shift();
      this.offset = 0;
    }
    this.queued -= 1;
    this.played += 1;
    return sample;
  }

  /** Fill `out` from the buffer; returns how many output samples were written. */
  fill(out) {
    let written = 0;
    if (this.step === 1) {
      while (written < out.length && this.queued > 0) out[written++] = this.pop();
      return written;
    }
    // Another reply rate than the context's (a rate the server does not offer): linear interpolation.
    while (written < out.length) {
      while (this.phase >= 1) {
        if (this.queued === 0) return written;
        this.before = this.after;
        this.after = this.pop();
        this.phase -= 1;
      }
      out[written++] = this.before + (this.after - this.before) * this.phase;
      this.phase += this.step;
    }
    return written;
  }

  finish(how) {
    this.port.postMessage({ type: how, key: this.key, played: this.played, underruns: this.underruns });
    this.key = null;
    this.chunks = [];
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (this.key === null || !out) return true;
    if (this.buffering) {
      if (this.queued >= this.waitFor || (this.ended && this.queued > 0)) {
        this.buffering = false;
        if (this.started) this.underruns += 1; // it ran dry mid-reply: the person heard a gap
      } else if (this.ended) this.finish("drained");
      if (this.buffering) return true;
    }
    const written = this.fill(out);
    if (written > 0 && !this.started) {
      this.started = true;
      this.port.postMessage({ type: "first", key: this.key });
    }
    this.sinceProgress += written;
    if (this.sinceProgress >= PROGRESS_EVERY_S * sampleRate) {
      this.sinceProgress = 0;
      this.port.postMessage({ type: "progress", key: this.key, played: this.played, underruns: this.underruns });
    }
    if (written < out.length) {
      if (this.ended && this.queued === 0) this.finish("drained");
      else {
        this.buffering = true;
        this.waitFor = Math.ceil(REFILL_BUFFER_S * this.step * sampleRate);
      }
    }
    return true;
  }
}

registerProcessor("reply-player", ReplyPlayer);
