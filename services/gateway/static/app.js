// Wiring: the microphone and player worklets, the protocol client (WebRTC where the browser has it, the
// WebSocket otherwise, or as the person picks), the state and the view.

import { RealtimeClient, fetchSessionToken, realtimeUrl } from "./protocol.js";
import { RtcClient, offerUrl, webrtcAvailable } from "./rtc-client.js";
import {
  applyServerEvent,
  createState,
  logEntry,
  playbackProgress,
  playbackStarted,
  playbackStopped,
  replyAudioReceived,
  rtcStatsReceived,
  rtcTurnStopped,
  sessionEnded,
  setError,
  turnByKey,
  turnFor,
} from "./state.js";
import { createView } from "./view.js";

const state = createState();
window.voxmesh = state;
const view = createView(state, { onMain, onMute, onTransport });
const transportChoice = document.getElementById("transport");
const replyAudio = document.getElementById("reply-audio");
setUpTransportChoice();

let audio = null; // {context, stream, mic, player}
let client = null;
let attempt = 0; // counts start() and stop(): a start that was stopped while it waited gives up

class MicrophoneError extends Error {}

/** WebRTC by default where the browser has it; `?transport=websocket|webrtc` or the menu picks one. */
function setUpTransportChoice() {
  const webrtcOption = transportChoice.querySelector('option[value="webrtc"]');
  const asked = new URLSearchParams(window.location.search).get("transport");
  if (!webrtcAvailable()) {
    webrtcOption.disabled = true;
    webrtcOption.textContent += " (not in this browser)";
    transportChoice.value = "websocket";
  } else if (asked === "websocket" || asked === "webrtc") {
    transportChoice.value = asked;
  } else {
    transportChoice.value = "webrtc";
  }
}

function onTransport() {
  logEntry(state, "page", "transport chosen", transportChoice.value);
  view.render();
}

function onMain(action) {
  if (action === "stop") stop();
  else start();
}

function onMute() {
  if (audio === null || !(state.mic === "on" || state.mic === "muted")) return;
  const muted = state.mic !== "muted";
  // A muted microphone still sends silence: the server needs an unbroken stream to hear pauses.
  audio.mic.port.postMessage({ type: "mute", muted });
  // Over WebRTC the track itself carries the microphone: a disabled track sends silence.
  if (state.transport === "webrtc") for (const track of audio.stream.getAudioTracks()) track.enabled = !muted;
  state.mic = muted ? "muted" : "on";
  logEntry(state, "page", muted ? "microphone muted" : "microphone unmuted");
  view.render();
}

/** What went wrong with the microphone, in plain words, with what to do about it. */
function microphoneProblem(error) {
  const name = error?.name ?? "";
  if (error instanceof MicrophoneError) return error.message;
  if (name === "NotAllowedError" || name === "SecurityError")
    return "The browser blocked the microphone. Allow it for this page (the microphone or lock icon in the address bar, or the browser's site settings), then press “Try the microphone again”.";
  if (name === "NotFoundError" || name === "OverconstrainedError")
    return "No microphone was found. Plug one in (or pick one in your system's sound settings), then press “Try the microphone again”.";
  if (name === "NotReadableError" || name === "AbortError")
    return "The microphone is busy or failed to start; another app may be using it. Close that app, then press “Try the microphone again”.";
  return `The microphone could not be started (${name || error}). Press “Try the microphone again”.`;
}

async function openAudio() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia || typeof AudioWorkletNode === "undefined") {
    throw new MicrophoneError(
      "This browser only allows the microphone on secure pages. Open the page as https://…, or as http://localhost on the machine running voxmesh.",
    );
  }
  // Created and resumed inside the click, so the browser lets it play sound.
  const context = new AudioContext({ latencyHint: "interactive" });
  const resumed = context.resume();
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    await Promise.all([
      context.audioWorklet.addModule(new URL("mic-worklet.js", import.meta.url)),
      context.audioWorklet.addModule(new URL("player-worklet.js", import.meta.url)),
      resumed,
    ]);
    const source = context.createMediaStreamSource(stream);
    const mic = new AudioWorkletNode(context, "mic-capture", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    const player = new AudioWorkletNode(context, "reply-player", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
    source.connect(mic);
    mic.connect(context.destination); // silent; keeps the capture node pulled by the audio graph
    player.connect(context.destination);
    for (const track of stream.getAudioTracks()) track.addEventListener("ended", onMicrophoneGone);
    return { context, stream, mic, player };
  } catch (error) {
    context.close();
    throw error;
  }
}

function releaseAudio({ context, stream, mic }) {
  mic.port.postMessage({ type: "stop" });
  for (const track of stream.getTracks()) track.stop();
  context.close();
}

function closeAudio() {
  if (audio === null) return;
  releaseAudio(audio);
  audio = null;
  state.playingTurn = null;
  state.micLevel = 0;
}

function onMicrophoneGone() {
  stop();
  setError(state, "mic", "The microphone stopped (unplugged, or switched off in the system). Connect it, then press “Try the microphone again”.");
  state.mic = "blocked";
  view.render();
}

async function start() {
  if (audio !== null || client !== null || state.mic === "requesting") return;
  const mine = ++attempt;
  setError(state, null);
  state.mic = "requesting";
  state.connection = "connecting";
  view.render();
  let opened;
  try {
    opened = await openAudio();
  } catch (error) {
    if (mine !== attempt) return;
    state.mic = "blocked";
    state.connection = "idle";
    setError(state, "mic", microphoneProblem(error));
    logEntry(state, "page", "microphone failed", String(error?.name ?? error));
    view.render();
    return;
  }
  if (mine !== attempt) {
    releaseAudio(opened); // stopped while the browser was asking for the microphone
    return;
  }
  audio = opened;
  state.mic = "on";
  audio.mic.port.onmessage = (event) => onMicFrame(event.data);
  audio.player.port.onmessage = (event) => onPlayer(event.data);
  connectClient(transportChoice.value === "webrtc" && webrtcAvailable() ? "webrtc" : "websocket");
}

/** Open the session on `transport`. A client that was stopped may still report its closing; only the
 * current one changes the page. A gateway that wants a session token refuses the first connection; the
 * page then asks its own gateway for one (GET /v1/token, served only to this machine) and tries again. */
function connectClient(transport) {
  state.transport = transport;
  state.rtc = null;
  transportChoice.disabled = true;
  let current = null;
  const handlers = {
    onEvent: (event) => client === current && onServerEvent(event),
    onAudio: (turnId, buffer) => client === current && onReplyAudio(turnId, buffer),
    onStatus: (status) => client === current && onConnectionStatus(status),
    onWire: (direction, type, detail) => logEntry(state, direction, type, detail),
    onStats: (counters, now) => client === current && onRtcStats(counters, now),
    onUnsupported: () => client === current && audio !== null && fallBackToWebSocket(),
  };
  const getToken = () => fetchSessionToken(window.location);
  if (transport === "webrtc") {
    const url = offerUrl(window.location);
    logEntry(state, "page", "connect (WebRTC)", url);
    current = new RtcClient(url, audio.stream, replyAudio, handlers, getToken);
  } else {
    const url = realtimeUrl(window.location, audio.context.sampleRate);
    logEntry(state, "page", "connect (WebSocket)", url);
    current = new RealtimeClient(url, handlers, getToken);
  }
  client = current;
  client.connect();
  view.render();
}

/** The gateway serves no WebRTC, or WebRTC cannot connect here: the WebSocket carries the session. */
function fallBackToWebSocket() {
  logEntry(state, "page", "WebRTC unavailable here", "falling back to the WebSocket");
  connectClient("websocket");
}

function onRtcStats(counters, now) {
  rtcStatsReceived(state, counters, now);
  view.render();
}

function stop() {
  attempt += 1;
  const closing = client;
  client = null;
  closing?.close();
  closeAudio();
  transportChoice.disabled = false;
  sessionEnded(state, "the conversation was ended");
  state.connection = "idle";
  state.mic = "off";
  view.render();
}

function onMicFrame(message) {
  if (message.type !== "frame" || client === null) return;
  client.sendAudio(message.pcm);
  state.framesSent = client.framesSent;
  state.micLevel = message.level;
  view.render();
}

function onConnectionStatus(status) {
  switch (status.state) {
    case "connecting":
      state.connection = "connecting";
      break;
    case "reconnecting":
      state.connection = "reconnecting";
      state.reconnectAttempt = status.attempt;
      audio?.player.port.postMessage({ type: "reset" });
      sessionEnded(state, "the connection dropped");
      if (status.reason) setError(state, "connection", reconnectingProblem(status.reason));
      break;
    case "connected":
      state.connection = "connected";
      state.reconnectAttempt = 0;
      if (state.lastError?.kind === "connection") setError(state, null);
      break;
    case "closed":
      state.connection = "idle";
      break;
    case "failed":
      client = null;
      closeAudio();
      transportChoice.disabled = false;
      sessionEnded(state, "the connection dropped");
      state.connection = "disconnected";
      state.mic = "off";
      setError(state, "server", serverProblem(status));
      break;
    default:
      break;
  }
  logEntry(state, "page", `connection ${status.state}`, status.code ? `code ${status.code}` : "");
  view.render();
}

function reconnectingProblem(reason) {
  if (reason === "unreachable") return "Can't reach the voxmesh server yet; trying again…";
  if (reason === "busy") return "The server is busy or restarting; trying again…";
  return "Lost the connection to the server; reconnecting…";
}

/** Why the server is gone, in plain words. */
function serverProblem(status) {
  switch (status.reason) {
    case "origin":
      return "The server refused this page's address (origin not allowed). Open the page from the server's own address, or add this one to VOXMESH_GATEWAY_ALLOWED_ORIGINS (and its host to VOXMESH_GATEWAY_ALLOWED_HOSTS).";
    case "auth":
      return `The server wants a session token (${status.detail}) and has none for this page. Open the page on the server's own machine (make run), or ask its operator for access.`;
    case "ended":
      return `The server ended the conversation${status.detail ? ` (${status.detail})` : ""}. Press “Reconnect” to start a new one.`;
    case "busy":
      return "The server is busy or restarting. Wait a moment, then press “Reconnect”.";
    case "unreachable":
      return `Can't reach the voxmesh server at ${window.location.host}. Is it running (make run)? Press “Reconnect” once it is.`;
    default:
      return "The connection to the server was lost. Press “Reconnect” to start a new conversation.";
  }
}

function onServerEvent(event) {
  const now = performance.now();
  // Before the state moves on: which reply the player still holds that this event makes stale.
  const held = state.playingTurn === null ? null : turnByKey(state, state.playingTurn);
  applyServerEvent(state, event, now);
  switch (event.kind) {
    case "speechStarted":
      if (held !== null && held.session === state.session && held.id < event.turnId) clearPlayback(held);
      break;
    case "audioStart": {
      const turn = turnFor(state, event.turnId);
      state.playingTurn = turn.key;
      if (state.transport === "websocket") audio?.player.port.postMessage({ type: "start", key: turn.key, rate: turn.sampleRate });
      break;
    }
    case "audioEnd": {
      const turn = turnFor(state, event.turnId);
      // Over WebRTC, audio.end comes once the gateway's track has played the reply out.
      if (state.transport === "webrtc") rtcTurnStopped(state, turn, "drained");
      else audio?.player.port.postMessage({ type: "end", key: turn.key });
      break;
    }
    case "audioClear":
      clearPlayback(turnFor(state, event.turnId));
      break;
    default:
      break;
  }
  view.render();
}

/** Stop a reply now; the player answers with where it stopped, which goes back to the server. */
function clearPlayback(turn) {
  if (state.playingTurn === turn.key) state.playingTurn = null;
  if (state.transport === "webrtc") {
    rtcTurnStopped(state, turn, "cleared"); // the gateway emptied its track: nothing more of it plays
    return;
  }
  if (audio === null) return;
  audio.player.port.postMessage({ type: "clear", key: turn.key });
}

function onReplyAudio(turnId, buffer) {
  const turn = turnFor(state, turnId);
  if (audio === null || state.playingTurn !== turn.key) return;
  replyAudioReceived(state, turn, buffer.byteLength);
  audio.player.port.postMessage({ type: "pcm", key: turn.key, pcm: buffer }, [buffer]);
}

function onPlayer(message) {
  switch (message.type) {
    case "first": {
      const outputLatency = audio?.context.outputLatency;
      playbackStarted(state, message.key, performance.now(), Number.isFinite(outputLatency) ? outputLatency * 1000 : 0);
      break;
    }
    case "progress":
      playbackProgress(state, message.key, message.played, message.underruns);
      break;
    case "drained":
    case "cleared": {
      const turn = playbackStopped(state, message.key, message.played, message.underruns, message.type);
      // played is null when the player had already let go of the turn: its position is reported then.
      const report = message.played !== null || turn?.reportedPlayedMs === null;
      if (report && turn !== null && turn.session === state.session && client !== null && turn.sampleRate) {
        turn.reportedPlayedMs = (turn.samplesPlayed / turn.sampleRate) * 1000;
        client.audioPlayed(turn.id, turn.reportedPlayedMs);
      }
      break;
    }
    default:
      break;
  }
  view.render();
}

// Leaving the page ends the session cleanly rather than leaving the server to notice a dropped socket.
window.addEventListener("pagehide", () => client !== null && stop());
logEntry(state, "page", "ready");
view.render();
