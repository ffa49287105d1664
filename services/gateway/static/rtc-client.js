// The realtime protocol over WebRTC (docs/protocol.md, "WebRTC"): the microphone goes on an audio track
// (the browser's echo cancellation, Opus, encrypted by DTLS-SRTP), the reply comes back on the gateway's
// audio track, played by an <audio> element, and the events travel on a data channel with the very same
// JSON as on the WebSocket. The gateway paces the reply and knows what was played, so the page sends no
// audio frames and no `audio.played`; its counters come from the connection's statistics.

import { decodeEvent, describe } from "./protocol.js";

const RETRY_DELAYS_MS = [500, 1500, 4000];
const STATS_EVERY_MS = 100;
const GATHER_TIMEOUT_MS = 3000;
// A session that has not started this long after the offer went out never will over WebRTC here (UDP
// blocked, no route to the gateway's candidates): the page falls back to the WebSocket.
const START_TIMEOUT_MS = 10000;
const TOKEN_PROBLEMS = ["token required", "token invalid", "token expired"];

/** Whether this browser can talk WebRTC at all. */
export function webrtcAvailable() {
  return typeof RTCPeerConnection === "function" && typeof RTCPeerConnection.prototype.createDataChannel === "function";
}

/** The gateway's offer URL, derived from the page's own location. */
export function offerUrl(location) {
  const url = new URL("v1/webrtc/offer", location.href);
  url.search = "";
  url.hash = "";
  return url.toString();
}

/** Why a session ended, from the gateway's `session.closed` (WebSocket close codes) or an HTTP refusal. */
function endReason(code, detail, everStarted) {
  if (code === 1000) return { reason: "ended", retry: false, detail };
  if (code === 1008 || code === 401) return { reason: TOKEN_PROBLEMS.includes(detail) || code === 401 ? "auth" : "origin", retry: false, detail };
  if (code === 403) return { reason: "origin", retry: false, detail };
  if (code === 1013 || code === 503 || code === 429) return { reason: "busy", retry: true, detail };
  if (code === 400 || code === 413) return { reason: "refused", retry: false, detail };
  return { reason: everStarted ? "lost" : "unreachable", retry: true, detail };
}

/**
 * One conversation over WebRTC, with the same interface as `RealtimeClient` (connect, send, ping,
 * cancelResponse, close; handlers onEvent, onStatus, onWire, and onStats for the connection's counters).
 *
 * `stream` is the microphone's MediaStream; `audioElement` plays the reply track.
 * `onUnsupported` is called when the gateway has no WebRTC endpoint (the page falls back to the WebSocket).
 */
export class RtcClient {
  constructor(url, stream, audioElement, handlers, getToken = null) {
    this.url = url;
    this.stream = stream;
    this.audioElement = audioElement;
    this.handlers = handlers;
    this.getToken = getToken;
    this.token = null;
    this.tokenRenewed = false;
    this.pc = null;
    this.channel = null;
    this.closing = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.statsTimer = null;
    this.startTimer = null;
    this.everStarted = false;
    this.framesSent = 0;
    this.ended = false; // the current connection was reported ended (once)
  }

  connect() {
    this.closing = false;
    this.attempt = 0;
    this.open();
  }

  async open() {
    this.retryTimer = null;
    this.ended = false;
    this.handlers.onStatus(this.attempt ? { state: "reconnecting", attempt: this.attempt, of: RETRY_DELAYS_MS.length } : { state: "connecting" });
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);
    const channel = pc.createDataChannel("voxmesh");
    this.channel = channel;
    channel.onmessage = (message) => pc === this.pc && this.receive(message.data);
    channel.onclose = () => pc === this.pc && this.lost(pc, 1006, "");
    pc.ontrack = (event) => {
      this.audioElement.srcObject = event.streams[0] ?? new MediaStream([event.track]);
      this.audioElement.play().catch(() => {}); // autoplay: the click that started the session allows it
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && pc.connectionState === "failed") this.lost(pc, 1006, "connection failed");
    };
    let response;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const headers = { "Content-Type": "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      const offer = pc.localDescription;
      this.handlers.onWire("out", "(offer)", this.url);
      response = await fetch(this.url, { method: "POST", headers, body: JSON.stringify({ type: offer.type, sdp: offer.sdp }), cache: "no-store", credentials: "omit" });
    } catch (error) {
      if (pc === this.pc) this.lost(pc, 1006, String(error));
      return;
    }
    if (pc !== this.pc) return;
    if (response.status === 404 || response.status === 405) {
      this.hangUp();
      this.handlers.onUnsupported?.();
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      this.handlers.onWire("in", "(refused)", `HTTP ${response.status} ${body?.error?.code ?? ""}: ${body?.error?.message ?? ""}`);
      this.lost(pc, response.status, body?.error?.message ?? "");
      return;
    }
    try {
      await pc.setRemoteDescription({ type: body.type, sdp: body.sdp });
    } catch (error) {
      this.lost(pc, 1006, String(error));
      return;
    }
    this.statsTimer = setInterval(() => this.pollStats(pc), STATS_EVERY_MS);
    if (!this.everStarted) this.startTimer = setTimeout(() => this.neverStarted(pc), START_TIMEOUT_MS);
  }

  /** The first session never started over WebRTC: give way to the WebSocket if the page has one. */
  neverStarted(pc) {
    if (pc !== this.pc || this.everStarted || this.handlers.onUnsupported === undefined) return;
    this.handlers.onWire("in", "(no WebRTC connection)", `nothing within ${START_TIMEOUT_MS / 1000} s`);
    this.ended = true;
    this.hangUp();
    this.handlers.onUnsupported();
  }

  receive(data) {
    if (typeof data !== "string") return;
    let wire;
    try {
      wire = JSON.parse(data);
    } catch {
      this.handlers.onWire("in", "(not JSON)", "");
      return;
    }
    if (wire === null || typeof wire !== "object" || typeof wire.type !== "string") return;
    this.handlers.onWire("in", wire.type, describe(wire));
    if (wire.type === "session.closed") {
      this.lost(this.pc, typeof wire.code === "number" ? wire.code : 1006, typeof wire.reason === "string" ? wire.reason : "");
      return;
    }
    const event = decodeEvent(wire);
    if (event === null) return;
    if (event.kind === "sessionStarted") {
      clearTimeout(this.startTimer);
      this.everStarted = true;
      this.attempt = 0;
      this.tokenRenewed = false;
      this.handlers.onEvent(event);
      this.handlers.onStatus({ state: "connected" });
      return;
    }
    this.handlers.onEvent(event);
  }

  async pollStats(pc) {
    if (pc !== this.pc) return;
    const report = await pc.getStats().catch(() => null);
    if (report === null || pc !== this.pc) return;
    const counters = { packetsSent: 0, packetsReceived: 0, samplesReceived: 0, audioEnergy: 0, concealedSamples: 0, jitterBufferMs: null };
    report.forEach((entry) => {
      if (entry.type === "outbound-rtp" && entry.kind === "audio") counters.packetsSent += entry.packetsSent ?? 0;
      if (entry.type === "inbound-rtp" && entry.kind === "audio") {
        counters.packetsReceived += entry.packetsReceived ?? 0;
        counters.samplesReceived += entry.totalSamplesReceived ?? 0;
        counters.audioEnergy += entry.totalAudioEnergy ?? 0;
        counters.concealedSamples += entry.concealedSamples ?? 0;
        if (entry.jitterBufferEmittedCount) counters.jitterBufferMs = Math.round((entry.jitterBufferDelay / entry.jitterBufferEmittedCount) * 1000);
      }
    });
    counters.elementPlaying = !this.audioElement.paused && this.audioElement.currentTime > 0;
    this.framesSent = counters.packetsSent;
    this.handlers.onStats?.(counters, performance.now());
  }

  lost(pc, code, detail) {
    if (pc !== this.pc || this.ended) return;
    this.ended = true;
    this.hangUp();
    if (this.closing) {
      this.handlers.onStatus({ state: "closed" });
      return;
    }
    const why = endReason(code, detail, this.everStarted);
    if (!this.everStarted && code === 1006 && this.handlers.onUnsupported !== undefined) {
      // The first connection failed outright (ICE, DTLS): this network does not carry WebRTC here.
      this.handlers.onWire("in", "(no WebRTC connection)", detail);
      this.handlers.onUnsupported();
      return;
    }
    this.handlers.onWire("in", "(closed)", `code ${code}${detail ? `: ${detail}` : ""}`);
    if (why.reason === "auth" && this.getToken !== null && !this.tokenRenewed) {
      this.tokenRenewed = true;
      this.renewToken(code, why);
      return;
    }
    if (why.retry && this.attempt < RETRY_DELAYS_MS.length) {
      const delay = RETRY_DELAYS_MS[this.attempt];
      this.attempt += 1;
      this.handlers.onStatus({ state: "reconnecting", attempt: this.attempt, of: RETRY_DELAYS_MS.length, code, reason: why.reason });
      this.retryTimer = setTimeout(() => this.open(), delay);
      return;
    }
    this.handlers.onStatus({ state: "failed", code, ...why });
  }

  async renewToken(code, why) {
    let token = null;
    try {
      token = await this.getToken();
    } catch {
      token = null;
    }
    if (this.closing) return;
    if (token === null) {
      this.handlers.onStatus({ state: "failed", code, ...why });
      return;
    }
    this.token = token;
    this.open();
  }

  hangUp() {
    clearTimeout(this.startTimer);
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    const pc = this.pc;
    this.pc = null;
    this.channel = null;
    if (pc !== null) {
      for (const sender of pc.getSenders()) pc.removeTrack(sender); // the microphone stays with the page
      pc.close();
    }
    this.audioElement.srcObject = null;
  }

  /** The microphone travels on its track: nothing to send by hand. */
  sendAudio() {}

  send(event) {
    if (this.channel?.readyState !== "open") return false;
    this.channel.send(JSON.stringify(event));
    this.handlers.onWire("out", event.type, describe(event));
    return true;
  }

  /** The gateway counts what its track played: the page need not report it. */
  audioPlayed() {
    return false;
  }

  cancelResponse() {
    return this.send({ type: "response.cancel" });
  }

  ping() {
    return this.send({ type: "ping" });
  }

  close() {
    this.closing = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pc === null) {
      this.handlers.onStatus({ state: "closed" });
      return;
    }
    this.send({ type: "session.close" });
    const pc = this.pc;
    // The close event goes out before the connection does.
    setTimeout(() => this.lost(pc, 1000, ""), 200);
  }
}

/** ICE gathering done (the gateway takes no trickled candidates), or a little while passed. */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
