// The page's one state object: events change it, the view redraws from it, and scripts (and tests) read it
// as `window.voxmesh`. No DOM and no wire format here: page events come decoded by protocol.js.

const LOG_LIMIT = 200;

/** A fresh state: not connected, microphone off, no conversation yet. */
export function createState() {
  return {
    connection: "idle", // idle | connecting | connected | reconnecting | disconnected
    transport: null, // webrtc | websocket: what the session runs on (chosen when it starts)
    rtc: null, // WebRTC counters from the connection's statistics (packets, samples, energy), or null
    reconnectAttempt: 0,
    mic: "off", // off | requesting | on | muted | blocked
    micLevel: 0, // 0..1, loudness of the last microphone frame
    sessionId: null,
    session: 0, // counts sessions (reconnects): turn numbers restart with each one
    outputSampleRate: null,
    framesSent: 0,
    samplesPlayed: 0, // reply samples played, all turns
    playingTurn: null, // key of the turn the player holds
    turns: [],
    lastLatencyMs: null,
    lastError: null, // {kind, message} the person should see, or null
    log: [], // {n, at, direction, type, detail}
    logCount: 0,
  };
}

/** A line in the event log (never audio). */
export function logEntry(state, direction, type, detail = "") {
  state.logCount += 1;
  state.log.push({ n: state.logCount, at: Math.round(performance.now()), direction, type, detail });
  if (state.log.length > LOG_LIMIT) state.log.splice(0, state.log.length - LOG_LIMIT);
}

export function setError(state, kind, message) {
  state.lastError = kind === null ? null : { kind, message };
}

function newTurn(state, id) {
  const turn = {
    key: `${state.session}:${id}`,
    id,
    session: state.session,
    status: "listening", // listening | thinking | speaking | done | interrupted | failed | ended
    userText: "",
    userFinal: false,
    phrases: [], // reply phrases by seq
    assistantText: "",
    interrupted: false,
    heardText: null, // what was heard of an interrupted reply, once known
    unheardText: "",
    playedMs: null,
    reportedPlayedMs: null, // the last `audio.played` sent for this turn
    samplesReceived: 0,
    samplesPlayed: 0,
    underruns: 0, // times the player ran dry before the reply's end (a gap the person heard)
    rtcBase: null, // WebRTC: the remote track's samples received when this reply began to sound
    sampleRate: null,
    audioStartAt: null,
    audioEnded: false,
    playback: "none", // none | waiting | playing | drained | cleared
    serverLatencyMs: null,
    localLatencyMs: null,
    latencyMs: null,
    error: null,
  };
  state.turns.push(turn);
  return turn;
}

/** The turn `id` of the current session, created if the server's first word about it is not speech.started. */
export function turnFor(state, id) {
  for (let i = state.turns.length - 1; i >= 0; i -= 1) {
    const turn = state.turns[i];
    if (turn.session === state.session && turn.id === id) return turn;
  }
  return newTurn(state, id);
}

export function turnByKey(state, key) {
  return state.turns.find((turn) => turn.key === key) ?? null;
}

const words = (text) => text.split(/\s+/).filter(Boolean);
const bare = (word) => word.toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");

/** Split a reply into the part that was heard and the rest, matching word by word. */
export function splitHeard(full, heard) {
  const fullWords = words(full);
  const heardWords = words(heard);
  let same = 0;
  while (same < fullWords.length && same < heardWords.length && bare(fullWords[same]) === bare(heardWords[same])) same += 1;
  if (same < heardWords.length) return { heard: heard.trim(), unheard: "" }; // not a prefix: trust the server
  return { heard: heard.trim(), unheard: fullWords.slice(same).join(" ") };
}

function updateHeard(turn) {
  if (!turn.interrupted) return;
  if (turn.heardText === null) {
    turn.unheardText = turn.samplesPlayed === 0 && turn.playback !== "playing" ? turn.assistantText : "";
    return;
  }
  turn.unheardText = splitHeard(turn.assistantText, turn.heardText).unheard;
}

function interrupt(turn) {
  if (turn.status === "done" || turn.status === "failed") return;
  turn.interrupted = true;
  turn.status = "interrupted";
  updateHeard(turn);
}

/** A decoded server event changes the state; side effects (audio, replies to the server) are app.js's. */
export function applyServerEvent(state, event, now) {
  switch (event.kind) {
    case "sessionStarted":
      state.session += 1;
      state.sessionId = event.sessionId;
      state.outputSampleRate = event.outputSampleRate;
      break;
    case "speechStarted": {
      for (const turn of state.turns) {
        // Any reply of an older turn that is still in the making or playing is stale now.
        if (turn.session === state.session && turn.id < event.turnId && turn.assistantText && turn.playback !== "drained") interrupt(turn);
      }
      turnFor(state, event.turnId);
      break;
    }
    case "transcript": {
      const turn = turnFor(state, event.turnId);
      if (turn.userFinal && !event.final) break; // a late partial never replaces the final words
      turn.userText = event.text;
      turn.userFinal = event.final;
      if (event.final && turn.status === "listening") turn.status = "thinking";
      break;
    }
    case "replyText": {
      const turn = turnFor(state, event.turnId);
      turn.phrases[event.seq] = event.text;
      turn.assistantText = turn.phrases.filter((phrase) => phrase).join(" ");
      if (turn.status === "listening") turn.status = "thinking";
      updateHeard(turn);
      break;
    }
    case "audioStart": {
      const turn = turnFor(state, event.turnId);
      turn.sampleRate = event.sampleRate ?? state.outputSampleRate;
      turn.serverLatencyMs = event.serverLatencyMs;
      turn.audioStartAt = now;
      turn.playback = "waiting";
      if (!turn.interrupted) turn.status = "speaking";
      break;
    }
    case "audioEnd":
      turnFor(state, event.turnId).audioEnded = true;
      break;
    case "audioClear":
      interrupt(turnFor(state, event.turnId));
      break;
    case "replyTruncated": {
      const turn = turnFor(state, event.turnId);
      turn.interrupted = true;
      turn.status = "interrupted";
      turn.heardText = event.heardText;
      if (event.playedMs !== null) turn.playedMs = event.playedMs;
      updateHeard(turn);
      break;
    }
    case "serverError":
      if (event.turnId !== null && event.code === "turn_failed") {
        const turn = turnFor(state, event.turnId);
        turn.status = "failed";
        turn.error = event.message || "the assistant could not answer";
        setError(state, "turn", `The assistant could not answer that: ${turn.error}. Try asking again.`);
      }
      break; // other errors are not about a turn: the event log shows them
    default:
      break;
  }
}

/** The player output the first sample of a turn: the latency as the person hears it is now known. */
export function playbackStarted(state, key, now, outputLatencyMs) {
  const turn = turnByKey(state, key);
  if (turn === null || turn.audioStartAt === null) return;
  turn.playback = "playing";
  turn.localLatencyMs = Math.max(0, Math.round(now - turn.audioStartAt + outputLatencyMs));
  turn.latencyMs = turn.serverLatencyMs === null ? turn.localLatencyMs : Math.round(turn.serverLatencyMs + turn.localLatencyMs);
  state.lastLatencyMs = turn.latencyMs;
}

/** Reply audio of a turn went to the player. */
export function replyAudioReceived(state, turn, bytes) {
  turn.samplesReceived += bytes >> 1;
}

/** How many samples of a turn's reply the player has played so far. */
export function playbackProgress(state, key, played, underruns) {
  const turn = turnByKey(state, key);
  if (turn === null || played < turn.samplesPlayed) return;
  if (underruns !== undefined) turn.underruns = underruns;
  state.samplesPlayed += played - turn.samplesPlayed;
  turn.samplesPlayed = played;
  if (turn.sampleRate) turn.playedMs = (played / turn.sampleRate) * 1000;
}

/** The player let go of a turn: it played to the end ("drained") or was emptied ("cleared"). */
export function playbackStopped(state, key, played, underruns, how) {
  const turn = turnByKey(state, key);
  if (turn === null) return null;
  if (played !== null) playbackProgress(state, key, played, underruns);
  if (state.playingTurn === key) state.playingTurn = null;
  turn.playback = how;
  if (how === "drained" && !turn.interrupted && turn.status !== "failed") turn.status = "done";
  if (how === "cleared") interrupt(turn);
  updateHeard(turn);
  return turn;
}

/** The session ended (`why`, e.g. "the connection dropped"): its turns still in progress end here. */
export function sessionEnded(state, why) {
  state.playingTurn = null;
  const newest = Math.max(0, ...state.turns.filter((t) => t.session === state.session).map((t) => t.id));
  for (const turn of state.turns) {
    if (turn.session !== state.session) continue;
    // Words of an older turn left unanswered went into the next turn's question (protocol rule 3).
    if (turn.id < newest && !turn.assistantText && ["listening", "thinking"].includes(turn.status)) turn.status = "ended";
    if (turn.playback === "waiting" || turn.playback === "playing") turn.playback = "cleared";
    if (turn.status === "speaking" || (turn.status === "thinking" && turn.assistantText)) interrupt(turn);
    else if (turn.status === "listening" && !turn.userText) turn.status = "ended"; // nothing was said
    else if (turn.status === "thinking" || turn.status === "listening") turn.status = "failed";
    if (turn.status === "failed" && turn.error === null) turn.error = why;
  }
}

// Reply audio louder than this (total audio energy gained between two polls) means the track is sounding.
const RTC_SOUND_ENERGY = 1e-6;

/**
 * The WebRTC connection's counters were read (`now`: performance.now()): the reply playing on the remote
 * track starts once its energy rises, and its samples played are the track's samples since then.
 */
export function rtcStatsReceived(state, counters, now) {
  const previous = state.rtc;
  state.rtc = counters;
  state.framesSent = counters.packetsSent;
  if (previous === null || state.playingTurn === null) return;
  const turn = turnByKey(state, state.playingTurn);
  if (turn === null) return;
  if (turn.playback === "waiting" && counters.audioEnergy - previous.audioEnergy > RTC_SOUND_ENERGY) {
    turn.rtcBase = previous.samplesReceived;
    playbackStarted(state, turn.key, now, 0);
  }
  if (turn.playback === "playing" && turn.rtcBase !== null) {
    const played = counters.samplesReceived - turn.rtcBase;
    turn.samplesReceived = Math.max(turn.samplesReceived, played);
    playbackProgress(state, turn.key, played);
  }
}

/** The gateway's track finished a turn's reply (`audio.end`, "drained") or dropped it (`audio.clear`). */
export function rtcTurnStopped(state, turn, how) {
  if (turn.playback === "waiting") turn.playback = "none";
  return playbackStopped(state, turn.key, null, undefined, how);
}
