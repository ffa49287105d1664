// The realtime WebSocket protocol (docs/protocol.md). The only module that knows the wire format: it turns
// server frames into page events (camelCase, only the fields the page uses), applies the protocol's rules
// about which reply audio still counts, sends client events, and reconnects after the server went away.

export const INPUT_SAMPLE_RATE = 16000;
export const FRAME_BYTES = 640; // 20 ms of 16 kHz s16le mono
const MIN_OUTPUT_RATE = 8000;
const MAX_OUTPUT_RATE = 48000;
// Microphone frames captured before the session started (or while reconnecting) wait here; older ones
// are dropped, since a burst of backlog could trip the server's input rate limit.
const QUEUE_LIMIT = 25;
const RETRY_DELAYS_MS = [500, 1500, 4000];
// The subprotocol offered next to a session token; the server echoes it, never the token.
const SUBPROTOCOL = "voxmesh";
const TOKEN_PROBLEMS = ["token required", "token invalid", "token expired"];

/** The reply sample rate to ask for: the AudioContext's rate, within what the server accepts. */
export function clampOutputRate(rate) {
  return Math.min(MAX_OUTPUT_RATE, Math.max(MIN_OUTPUT_RATE, Math.round(rate)));
}

/** The gateway's realtime URL, derived from the page's own location (ws: on http, wss: on https). */
export function realtimeUrl(location, outputSampleRate) {
  const url = new URL("v1/realtime", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  url.searchParams.set("output_sample_rate", String(clampOutputRate(outputSampleRate)));
  return url.toString();
}

/**
 * A session token from the gateway's `GET /v1/token` (docs/security.md), or null when it has none for this
 * page (the endpoint is off, or this is not the gateway's own machine).
 */
export async function fetchSessionToken(location) {
  const response = await fetch(new URL("v1/token", location.href), { cache: "no-store", credentials: "omit" });
  if (!response.ok) return null;
  const body = await response.json();
  return typeof body?.token === "string" && body.token ? body.token : null;
}

/** What the WebSocket offers in `Sec-WebSocket-Protocol`: nothing without a token. */
export function tokenProtocols(token) {
  return token ? [SUBPROTOCOL, `token.${token}`] : [];
}

/** The subprotocols of a connection: the token's, and the key of a session to resume after a drop. */
export function sessionProtocols(token, resumeKey) {
  if (!resumeKey) return tokenProtocols(token);
  return [...(token ? tokenProtocols(token) : [SUBPROTOCOL]), `resume.${resumeKey}`];
}

const text = (value) => (typeof value === "string" ? value : "");
const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

/** A server event as the page sees it; null for event types the page does not know (the protocol may grow). */
export function decodeEvent(wire) {
  const turnId = number(wire.turn_id);
  switch (wire.type) {
    case "session.started":
      return {
        kind: "sessionStarted", sessionId: text(wire.session_id), outputSampleRate: number(wire.output_sample_rate),
        turnId: number(wire.turn_id) ?? 0, resume: text(wire.resume) || null, resumed: wire.resumed === true,
      };
    case "session.updated":
      return { kind: "sessionUpdated", session: wire.session ?? {} };
    case "speech.started":
      return { kind: "speechStarted", turnId };
    case "transcript.partial":
      return { kind: "transcript", turnId, text: text(wire.text), final: false };
    case "transcript.final":
      return { kind: "transcript", turnId, text: text(wire.text), final: true };
    case "reply.text":
      return { kind: "replyText", turnId, seq: number(wire.seq) ?? 0, text: text(wire.text) };
    case "audio.start":
      return { kind: "audioStart", turnId, sampleRate: number(wire.sample_rate), serverLatencyMs: number(wire.latency_ms) };
    case "audio.end":
      return { kind: "audioEnd", turnId };
    case "audio.clear":
      return { kind: "audioClear", turnId };
    case "reply.truncated":
      return { kind: "replyTruncated", turnId, playedMs: number(wire.played_ms), heardText: text(wire.text) };
    case "error":
      return { kind: "serverError", turnId, code: text(wire.code), message: text(wire.message) };
    case "pong":
      return { kind: "pong" };
    default:
      return null;
  }
}

/** Why a connection ended, for the page to explain; `retry` says whether reconnecting may help. */
function closeReason(event, everStarted) {
  switch (event.code) {
    case 1000:
      return { reason: "ended", retry: false, detail: event.reason };
    case 1008:
      if (TOKEN_PROBLEMS.includes(event.reason)) return { reason: "auth", retry: false, detail: event.reason };
      // The session could not be resumed (its window was over): the next attempt starts a new one.
      if (event.reason === "resume failed") return { reason: "lost", retry: true, detail: event.reason };
      return { reason: "origin", retry: false, detail: event.reason };
    case 1009:
      return { reason: "too-big", retry: false, detail: event.reason };
    case 1013:
      return { reason: "busy", retry: true, detail: event.reason };
    default: // 1001 draining, 1006 unreachable or dropped, 1011 internal error
      return { reason: everStarted ? "lost" : "unreachable", retry: true, detail: event.reason };
  }
}

/**
 * One conversation with the gateway, across reconnects.
 *
 * handlers: onEvent(event) for decoded server events, onAudio(turnId, arrayBuffer) for reply audio that
 * still counts, onStatus({state, ...}) for connecting / reconnecting / connected / closed / failed,
 * onWire(direction, type, detail) for the event log.
 *
 * getToken: an async function giving a session token (or null); asked when the server refuses the
 * connection for its token, then the connection is opened again once with the new one.
 */
export class RealtimeClient {
  constructor(url, handlers, getToken = null) {
    this.url = url;
    this.handlers = handlers;
    this.getToken = getToken;
    this.token = null;
    this.tokenRenewed = false; // a fresh token was already tried since the last session started
    this.ws = null;
    this.closing = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.started = false;
    this.everStarted = false;
    this.queue = [];
    this.framesSent = 0;
    this.framesDropped = 0;
    this.latestTurn = 0; // the newest turn announced by the server
    this.audioTurn = null; // the turn whose reply audio is arriving, if any
    this.resumeKey = null; // the session's key to resume it with after a drop (a secret: never shown)
  }

  connect() {
    this.closing = false;
    this.attempt = 0;
    this.resumeKey = null;
    this.open();
  }

  open() {
    this.retryTimer = null;
    this.started = false;
    this.latestTurn = 0;
    this.audioTurn = null;
    this.handlers.onStatus(this.attempt ? { state: "reconnecting", attempt: this.attempt, of: RETRY_DELAYS_MS.length } : { state: "connecting" });
    let ws;
    try {
      // Reconnecting after a drop resumes the session (docs/protocol.md#resuming-a-session).
      ws = new WebSocket(this.url, sessionProtocols(this.token, this.attempt ? this.resumeKey : null));
    } catch (error) {
      this.handlers.onStatus({ state: "failed", reason: "bad-url", detail: String(error) });
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = (event) => this.closed(ws, event);
    this.ws = ws;
  }

  receive(data) {
    if (typeof data !== "string") {
      this.receiveAudio(data);
      return;
    }
    let wire;
    try {
      wire = JSON.parse(data);
    } catch {
      this.handlers.onWire("in", "(not JSON)", "");
      return;
    }
    if (wire === null || typeof wire !== "object" || typeof wire.type !== "string") return;
    const event = decodeEvent(wire);
    this.handlers.onWire("in", wire.type, describe(wire));
    if (event === null || !this.follow(event)) return;
    this.handlers.onEvent(event);
    if (event.kind === "sessionStarted") {
      this.handlers.onStatus({ state: "connected" });
      this.flush();
    }
  }

  /** Which turn's audio counts (docs/protocol.md, client rule 1); false for a stale `audio.start`. */
  follow(event) {
    const turn = event.turnId;
    switch (event.kind) {
      case "sessionStarted":
        this.started = true;
        this.everStarted = true;
        this.attempt = 0;
        this.tokenRenewed = false;
        this.resumeKey = event.resume;
        this.latestTurn = event.turnId ?? 0;
        break;
      case "speechStarted":
        this.latestTurn = Math.max(this.latestTurn, turn ?? 0);
        if (this.audioTurn !== null && this.audioTurn < this.latestTurn) this.audioTurn = null;
        break;
      case "audioStart":
        if (turn === null || turn < this.latestTurn) return false;
        this.latestTurn = turn;
        this.audioTurn = turn;
        break;
      case "audioEnd":
      case "audioClear":
        if (this.audioTurn === turn) this.audioTurn = null;
        break;
      default:
        break;
    }
    return true;
  }

  receiveAudio(buffer) {
    if (this.audioTurn === null || buffer.byteLength % 2) {
      this.framesDropped += 1;
      return;
    }
    this.handlers.onAudio(this.audioTurn, buffer);
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.started = false;
    this.audioTurn = null;
    if (this.closing) {
      this.handlers.onStatus({ state: "closed" });
      return;
    }
    const why = closeReason(event, this.everStarted);
    if (event.code === 1008 && event.reason === "resume failed") this.resumeKey = null;
    this.handlers.onWire("in", "(closed)", `code ${event.code}${event.reason ? `: ${event.reason}` : ""}`);
    if (why.reason === "auth" && this.getToken !== null && !this.tokenRenewed) {
      this.tokenRenewed = true;
      this.renewToken(event, why);
      return;
    }
    if (why.retry && this.attempt < RETRY_DELAYS_MS.length) {
      const delay = RETRY_DELAYS_MS[this.attempt];
      this.attempt += 1;
      this.handlers.onStatus({ state: "reconnecting", attempt: this.attempt, of: RETRY_DELAYS_MS.length, code: event.code, reason: why.reason });
      this.retryTimer = setTimeout(() => this.open(), delay);
      return;
    }
    this.handlers.onStatus({ state: "failed", code: event.code, ...why });
  }

  /** Ask for a fresh session token and connect again with it; fail as refused when there is none. */
  async renewToken(event, why) {
    let token = null;
    try {
      token = await this.getToken();
    } catch {
      token = null;
    }
    if (this.closing) return;
    if (token === null) {
      this.handlers.onStatus({ state: "failed", code: event.code, ...why });
      return;
    }
    this.token = token;
    this.open();
  }

  /** One 20 ms microphone frame (640 bytes); frames wait in a short queue until the session has started. */
  sendAudio(buffer) {
    if (this.started && this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(buffer);
      this.framesSent += 1;
      return;
    }
    this.queue.push(buffer);
    if (this.queue.length > QUEUE_LIMIT) {
      this.queue.shift();
      this.framesDropped += 1;
    }
  }

  flush() {
    const waiting = this.queue;
    this.queue = [];
    for (const buffer of waiting) this.sendAudio(buffer);
  }

  send(event) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(event));
    this.handlers.onWire("out", event.type, describe(event));
    return true;
  }

  /** How much of a turn's reply audio was played, in milliseconds (after `audio.clear` and at the end). */
  audioPlayed(turnId, playedMs) {
    return this.send({ type: "audio.played", turn_id: turnId, played_ms: Math.max(0, Math.round(playedMs * 10) / 10) });
  }

  cancelResponse() {
    return this.send({ type: "response.cancel" });
  }

  ping() {
    return this.send({ type: "ping" });
  }

  /** End the session for good: no reconnect. */
  close() {
    this.closing = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.queue = [];
    const ws = this.ws;
    if (ws === null) {
      this.handlers.onStatus({ state: "closed" });
      return;
    }
    if (ws.readyState === WebSocket.OPEN) this.send({ type: "session.close" });
    ws.close(1000, "client closed");
  }
}

/** The fields of a wire event worth a line in the event log. */
export function describe(wire) {
  const parts = [];
  for (const [key, value] of Object.entries(wire)) {
    if (key === "type") continue;
    // A session's resume key is a secret: the event log shows that there is one, never the key.
    parts.push(key === "resume" ? "resume=***" : `${key}=${JSON.stringify(value)}`);
  }
  return parts.join(" ");
}
