// Draws the page from the state object; it only reads the state. Changes are applied per element (never by
// rebuilding the conversation), so screen readers announce new words, not the whole conversation again.

const CONNECTION_LABELS = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

const MIC_LABELS = {
  off: "Microphone off",
  requesting: "Asking for the microphone…",
  on: "Microphone on",
  muted: "Microphone muted",
  blocked: "Microphone blocked",
};

const TRANSPORT_LABELS = { webrtc: "WebRTC", websocket: "WebSocket" };

/** The WebRTC connection's counters in a line: what arrived on the reply track, and its jitter buffer. */
function rtcText(rtc) {
  if (rtc === null) return "–";
  const seconds = (rtc.samplesReceived / 48000).toFixed(1);
  const jitter = rtc.jitterBufferMs === null ? "" : `, jitter buffer ${rtc.jitterBufferMs} ms`;
  return `${rtc.packetsReceived} packets, ${seconds} s received${jitter}`;
}

function setText(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

function setHidden(element, hidden) {
  if (element.hidden !== hidden) element.hidden = hidden;
}

function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

/** What the one main button does now, and its label. */
export function mainAction(state) {
  if (["connecting", "connected", "reconnecting"].includes(state.connection)) return { action: "stop", label: "End conversation" };
  if (state.lastError?.kind === "server") return { action: "start", label: "Reconnect" };
  if (state.lastError?.kind === "mic") return { action: "start", label: "Try the microphone again" };
  return { action: "start", label: "Start conversation" };
}

function latencyText(turn) {
  if (turn.latencyMs === null) return "";
  if (turn.serverLatencyMs === null) return `${turn.localLatencyMs} ms from reply to sound (this page's part only; the server sent no latency)`;
  return `Answered in ${turn.latencyMs} ms (server ${Math.round(turn.serverLatencyMs)} + playback ${turn.localLatencyMs})`;
}

function noteText(turn) {
  if (turn.status === "failed") return `No answer: ${turn.error}`;
  if (!turn.interrupted) return "";
  if (turn.playedMs !== null && turn.playedMs > 0) return `Interrupted after ${(turn.playedMs / 1000).toFixed(1)} s`;
  return "Interrupted before it was heard";
}

class TurnView {
  constructor(turn) {
    this.root = make("li", "turn");
    this.root.dataset.turn = String(turn.id);
    this.root.dataset.key = turn.key;
    this.user = make("div", "message user");
    this.user.append(make("span", "who", "You"));
    this.userText = make("p", "text");
    this.user.append(this.userText);
    this.assistant = make("div", "message assistant");
    this.assistant.append(make("span", "who", "Assistant"));
    const reply = make("p", "text");
    this.heard = make("span", "heard");
    this.unheard = make("del", "unheard");
    this.unheardLabel = make("span", "tag", "not heard");
    reply.append(this.heard, " ", this.unheard, " ", this.unheardLabel);
    this.assistant.append(reply);
    this.meta = make("p", "meta");
    this.latency = make("span", "latency");
    this.note = make("span", "note");
    this.meta.append(this.latency, this.note);
    this.root.append(this.user, this.assistant, this.meta);
  }

  update(turn, superseded) {
    this.root.dataset.status = turn.status;
    const userText = turn.userText || (turn.status === "listening" && !superseded ? "Listening…" : "");
    setText(this.userText, userText);
    this.userText.classList.toggle("pending", !turn.userFinal);
    setHidden(this.user, !userText);

    let heard = turn.assistantText;
    let unheard = "";
    if (turn.interrupted && turn.unheardText) {
      heard = turn.heardText ?? "";
      unheard = turn.unheardText;
    }
    const thinking = !turn.assistantText && turn.status === "thinking" && !superseded;
    setText(this.heard, heard || (thinking ? "Thinking…" : ""));
    this.heard.classList.toggle("pending", thinking);
    setText(this.unheard, unheard);
    setHidden(this.unheard, !unheard);
    setHidden(this.unheardLabel, !unheard);
    setHidden(this.assistant, !turn.assistantText && !thinking);

    setText(this.latency, latencyText(turn));
    this.latency.title = "From the end of your speech to the first sound of the answer";
    setText(this.note, noteText(turn));
    setHidden(this.meta, !this.latency.textContent && !this.note.textContent);
    // A turn that heard nothing (a noise, or speech that never became words) leaves no trace.
    setHidden(this.root, this.user.hidden && this.assistant.hidden && this.meta.hidden);
  }
}

/** Binds the page's elements; `render()` redraws them from the state (coalesced to one draw per frame). */
export function createView(state, handlers) {
  const $ = (id) => document.getElementById(id);
  const elements = {
    connection: $("connection"),
    mic: $("mic"),
    micLabel: $("mic-label"),
    micLevel: $("mic-level"),
    error: $("error"),
    errorText: $("error-text"),
    empty: $("empty"),
    turns: $("turns"),
    main: $("main-button"),
    mute: $("mute-button"),
    framesSent: $("frames-sent"),
    played: $("reply-played"),
    lastLatency: $("last-latency"),
    session: $("session-id"),
    transportUsed: $("transport-used"),
    rtcFigures: $("rtc-figures"),
    log: $("log"),
  };
  const turnViews = new Map();
  let loggedUpTo = 0;
  let scheduled = false;

  elements.main.addEventListener("click", () => handlers.onMain(mainAction(state).action));
  elements.mute.addEventListener("click", () => handlers.onMute());
  document.getElementById("transport").addEventListener("change", () => handlers.onTransport?.());

  function drawTurns() {
    const newest = state.turns.at(-1);
    let added = false;
    for (const turn of state.turns) {
      let view = turnViews.get(turn.key);
      if (!view) {
        view = new TurnView(turn);
        turnViews.set(turn.key, view);
        elements.turns.append(view.root);
        added = true;
      }
      view.update(turn, turn !== newest && turn.session === newest.session && turn.id < newest.id);
    }
    setHidden(elements.empty, state.turns.length > 0);
    if (added) elements.turns.lastElementChild?.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function drawLog() {
    for (const entry of state.log) {
      if (entry.n <= loggedUpTo) continue;
      const line = make("li", `log-${entry.direction}`);
      line.append(make("span", "log-time", `${(entry.at / 1000).toFixed(2)}`), make("span", "log-type", entry.type), make("span", "log-detail", entry.detail));
      elements.log.append(line);
      loggedUpTo = entry.n;
    }
    while (elements.log.childElementCount > 200) elements.log.firstElementChild.remove();
  }

  function draw() {
    scheduled = false;
    let connection = CONNECTION_LABELS[state.connection] ?? state.connection;
    if (state.connection === "reconnecting" && state.reconnectAttempt) connection = `Reconnecting (try ${state.reconnectAttempt})…`;
    setText(elements.connection, connection);
    elements.connection.dataset.state = state.connection;
    setText(elements.micLabel, MIC_LABELS[state.mic] ?? state.mic);
    elements.mic.dataset.state = state.mic;
    elements.micLevel.style.transform = `scaleX(${state.mic === "on" ? state.micLevel.toFixed(2) : 0})`;

    setHidden(elements.error, state.lastError === null);
    setText(elements.errorText, state.lastError?.message ?? "");

    const { action, label } = mainAction(state);
    setText(elements.main, label);
    elements.main.dataset.action = action;
    setHidden(elements.mute, !(state.mic === "on" || state.mic === "muted"));
    setText(elements.mute, state.mic === "muted" ? "Unmute microphone" : "Mute microphone");
    elements.mute.setAttribute("aria-pressed", String(state.mic === "muted"));

    drawTurns();
    setText(elements.framesSent, String(state.framesSent));
    setText(elements.played, state.outputSampleRate ? `${(state.samplesPlayed / state.outputSampleRate).toFixed(1)} s` : "0 s");
    setText(elements.lastLatency, state.lastLatencyMs === null ? "–" : `${state.lastLatencyMs} ms`);
    setText(elements.session, state.sessionId ?? "–");
    setText(elements.transportUsed, TRANSPORT_LABELS[state.transport] ?? "–");
    setText(elements.rtcFigures, rtcText(state.rtc));
    drawLog();
  }

  return {
    render() {
      if (scheduled) return;
      scheduled = true;
      // A hidden tab gets no animation frames; the timer keeps the state and the page in step anyway.
      requestAnimationFrame(() => scheduled && draw());
      setTimeout(() => scheduled && draw(), 250);
    },
  };
}
