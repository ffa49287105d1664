// AudioWorklet: the microphone, resampled to 16 kHz s16le mono and posted as 20 ms frames (640 bytes).
// Runs on the audio thread at the AudioContext's rate (`sampleRate`, usually 44.1 or 48 kHz).

const OUT_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz
const PHASES = 64; // fractional positions of the precomputed filter
const HALF_WIDTH = 8; // filter half-width, in output samples
const PASSBAND = 0.9; // of the output's Nyquist frequency: keeps speech, stops aliasing

/** A windowed-sinc low-pass filter table, one row of taps per fractional phase. */
function filterTable(step, half) {
  const cutoff = Math.min(1, 1 / step) * PASSBAND; // relative to the input's Nyquist frequency
  const taps = 2 * half;
  const table = [];
  for (let phase = 0; phase <= PHASES; phase += 1) {
    const frac = phase / PHASES;
    const row = new Float32Array(taps);
    let sum = 0;
    for (let k = 0; k < taps; k += 1) {
      const x = k - half + 1 - frac; // distance from the output instant, in input samples
      const t = cutoff * x;
      const sinc = t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t);
      const window = 0.5 + 0.5 * Math.cos((Math.PI * x) / half); // Hann
      row[k] = Math.abs(x) < half ? sinc * window : 0;
      sum += row[k];
    }
    for (let k = 0; k < taps; k += 1) row[k] /= sum; // unity gain at DC
    table.push(row);
  }
  return table;
}

class MicCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.half = Math.ceil(HALF_WIDTH * Math.max(1, this.step));
    this.table = filterTable(this.step, this.half);
    this.buffer = new Float32Array(8192);
    this.length = this.half; // starts with `half` samples of silence as history
    this.position = this.half - 1; // input index of the next output sample
    this.frame = new DataView(new ArrayBuffer(FRAME_SAMPLES * 2));
    this.filled = 0;
    this.energy = 0;
    this.muted = false;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data.type === "mute") this.muted = Boolean(event.data.muted);
      if (event.data.type === "stop") this.running = false;
    };
  }

  append(channels) {
    const count = channels[0].length;
    if (this.length + count > this.buffer.length) {
      const drop = Math.floor(this.position) - this.half + 1;
      this.buffer.copyWithin(0, drop, this.length);
      this.length -= drop;
      this.position -= drop;
    }
    for (let i = 0; i < count; i += 1) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.buffer[this.length + i] = sum / channels.length;
    }
    this.length += count;
  }

  resample() {
    const taps = 2 * this.half;
    while (this.position + this.half < this.length) {
      const base = Math.floor(this.position);
      const row = this.table[Math.round((this.position - base) * PHASES)];
      const start = base - this.half + 1;
      let sum = 0;
      for (let k = 0; k < taps; k += 1) sum += this.buffer[start + k] * row[k];
      this.emit(sum);
      this.position += this.step;
    }
  }

  emit(value) {
    const sample = this.muted ? 0 : Math.max(-1, Math.min(1, value));
    this.energy += sample * sample;
    this.frame.setInt16(this.filled * 2, Math.round(sample < 0 ? sample * 32768 : sample * 32767), true);
    this.filled += 1;
    if (this.filled === FRAME_SAMPLES) {
      const level = Math.min(1, Math.sqrt(this.energy / FRAME_SAMPLES) * 4);
      const pcm = this.frame.buffer;
      this.port.postMessage({ type: "frame", pcm, level }, [pcm]);
      this.frame = new DataView(new ArrayBuffer(FRAME_SAMPLES * 2));
      this.filled = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0 && channels[0].length > 0) {
      this.append(channels);
      this.resample();
    }
    return this.running;
  }
}

registerProcessor("mic-capture", MicCapture);
