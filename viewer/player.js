// WHEP player: POST our offer to /whep, play the answer, pick a rung through the
// session's layer URL; the control socket (/ws) brings state, rung changes, the capture
// clock and chat. No build step; plain ES modules.

import { Chat } from "./chat.js";
import { LatencyMeter } from "./latency.js";
import { StatsMonitor } from "./stats.js";
import { ControlSocket } from "./ws.js";

const $ = (id) => document.getElementById(id);
const video = $("video");
const stage = $("stage");
const banner = $("banner");
const bannerTitle = $("banner-title");
const bannerDetail = $("banner-detail");
const stateEl = $("state");
const resEl = $("resolution");
const quality = $("quality");
const latencyEl = $("latency");
const viewerCountEl = $("viewer-count");
const liveBadge = $("live");
const statsPanel = $("stats");
const statsToggle = $("stats-toggle");
const spark = $("spark");
const unmuteBig = $("unmute");
const muteBtn = $("mute");
const pipBtn = $("pip");
const fsBtn = $("fullscreen");

const LAYER_REL = "urn:ietf:params:whep:ext:core:layer";
const RETRY_MS = [1000, 2000, 5000, 10000];
const DISCONNECTED_GRACE_MS = 5000;
const STATS_EVERY_MS = 1000;
const READOUT_EVERY_MS = 250;

// state kind -> the short word in the header (tests read it) and the banner's words.
const STATES = {
  connecting: ["connecting", "Connecting…"],
  waiting: ["waiting for broadcast", "Waiting for the broadcast to start"],
  reconnecting: ["reconnecting", "Reconnecting…"],
  ended: ["ended", "The broadcast has ended"],
  error: ["error", "Cannot play this stream"],
  playing: ["playing", ""],
};

// Tests and the console reach the live session through window.player.
const player = {
  pc: null,
  location: null,
  layerUrl: null,
  sessionId: null,
  state: "connecting",
  hasAudio: false, // did the answer bring an audio track
  stream: null, // live | starting | ended, from the server
  ladder: [],
  rung: null, // {rung, target, mode} from the server
  viewers: null,
  latencyMs: null,
  stats: null,
  clockOffsetMs: null,
};
window.player = player;

let attempt = 0;
let retryTimer = null;
let connecting = false;
let leaving = false;
let helloFor = null; // session id of the last hello sent: its error means "unknown to us"

// A token from the page's own link (?token=...): a bearer token or a signed, expiring view
// link. WHEP gets it as a header; the WebSocket, which cannot carry headers, as a query.
const TOKEN = new URLSearchParams(location.search).get("token");
const AUTH = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
const WS_QUERY = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "";

const control = new ControlSocket(
  `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${WS_QUERY}`,
  onControlMessage,
  onControlStatus,
);
player.control = control;
const latency = new LatencyMeter(video, control);
player.latencyFrames = () => latency.drain();
const stats = new StatsMonitor();
const chat = new Chat(control);

// ------------------------------------------------------------------ state banner

function setState(kind, detail = "") {
  const [word, title] = STATES[kind] || STATES.error;
  player.state = kind;
  stateEl.textContent = word;
  stateEl.parentElement.dataset.kind = kind;
  banner.dataset.kind = kind;
  bannerTitle.textContent = kind === "error" && detail ? detail : title;
  bannerDetail.textContent = kind === "error" ? "" : detail;
  banner.hidden = kind === "playing";
  liveBadge.dataset.live = String(kind === "playing");
}

// ------------------------------------------------------------------ WHEP

function parseLinks(header) {
  // Several Link headers arrive joined by ", "; split only where a new <url> starts.
  const links = [];
  for (const part of (header || "").split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]*)>\s*;(.*)/);
    if (!m) continue;
    const rel = (m[2].match(/rel="([^"]*)"/) || [])[1];
    links.push({ url: m[1], rel });
  }
  return links;
}

async function waitForIce(pc, ms) {
  // No trickle from our side: send the offer once host candidates are in (loopback/LAN
  // gathering takes milliseconds), or after `ms` with whatever we have.
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

function setLadder(rungs, codec) {
  if (!Array.isArray(rungs) || !rungs.length || player.ladder.length) return;
  player.ladder = rungs.map((r) => ({ name: r.name, width: r.width, height: r.height }));
  const names = player.ladder.map((r) => r.name).join(" / ");
  $("ladder-info").textContent = `${String(codec || "").toUpperCase()} · ${names} · adaptive`;
  for (const rung of player.ladder) {
    const opt = document.createElement("option");
    opt.value = rung.name;
    quality.append(opt);
  }
  renderQuality();
}

async function loadLadder() {
  const res = await fetch("/api/ladder");
  if (!res.ok) throw new Error(`ladder: HTTP ${res.status}`);
  const ladder = await res.json();
  setLadder(ladder.rungs, ladder.codec);
}

// Tell the server we are gone. keepalive lets the request outlive the page.
function hangUp() {
  const where = player.location;
  player.location = null;
  player.layerUrl = null;
  player.sessionId = null;
  player.rung = null;
  control.session = null; // a reopened socket must not announce a session we hung up
  latency.reset();
  stats.reset();
  if (where) fetch(where, { method: "DELETE", keepalive: true, headers: AUTH }).catch(() => {});
  if (player.pc) {
    player.pc.close();
    player.pc = null;
  }
  renderQuality();
}

function scheduleRetry(reason) {
  if (leaving || retryTimer) return;
  const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
  attempt += 1;
  setState("reconnecting", `${reason}; retrying in ${Math.round(delay / 1000)} s`);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    start();
  }, delay);
}

// Connect now, skipping any back-off wait: the control socket says the server is there.
function reconnectNow() {
  if (leaving || connecting) return;
  clearTimeout(retryTimer);
  retryTimer = null;
  attempt = 0;
  start();
}

function start() {
  connecting = true;
  connect()
    .catch((err) => scheduleRetry(`error: ${err.message}`))
    .finally(() => { connecting = false; });
}

async function connect() {
  hangUp();
  setState(player.state === "reconnecting" ? "reconnecting" : "connecting");
  const pc = new RTCPeerConnection({ iceServers: [] });
  player.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  // Audio and video in one stream (the server sends them in one sync group, so the
  // browser lines them up); the element stays muted until the viewer unmutes.
  const media = new MediaStream();
  player.hasAudio = false;
  pc.ontrack = (ev) => {
    media.addTrack(ev.track);
    if (ev.track.kind === "audio") {
      player.hasAudio = true;
      renderMute();
    }
    if (video.srcObject !== media) {
      video.srcObject = media;
      video.play().catch(() => {}); // muted, so autoplay is allowed
    }
  };
  pc.onconnectionstatechange = () => {
    if (pc !== player.pc) return;
    if (pc.connectionState === "connected") {
      attempt = 0;
      if (video.srcObject && !video.paused && video.readyState >= 3) setState("playing");
    }
    if (pc.connectionState === "disconnected") {
      // Chromium takes ~30 s to declare "failed"; a live player should not wait that long.
      setState("reconnecting", "connection interrupted");
      setTimeout(() => {
        if (pc === player.pc && pc.connectionState === "disconnected") {
          hangUp();
          scheduleRetry("connection lost");
        }
      }, DISCONNECTED_GRACE_MS);
    }
    if (pc.connectionState === "failed") {
      hangUp();
      scheduleRetry("connection failed");
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc, 2000);
  const res = await fetch("/whep", {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...AUTH },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    let detail = "";
    try { detail = (await res.json()).error || ""; } catch { /* not JSON */ }
    pc.close();
    if (player.pc === pc) player.pc = null;
    const text = `server refused: ${res.status}${detail ? ` (${detail})` : ""}`;
    // 503 while the capture restarts or the server is full, 429 when offering too often.
    if (res.status >= 500 || res.status === 429) scheduleRetry(text);
    else setState("error", text);
    return;
  }
  // Location is relative to the WHEP endpoint's URL.
  const where = new URL(res.headers.get("Location"), res.url).href;
  if (pc !== player.pc) {
    // Superseded (page hidden or a newer attempt) while the offer was in flight.
    fetch(where, { method: "DELETE", keepalive: true, headers: AUTH }).catch(() => {});
    return;
  }
  player.location = where;
  player.sessionId = new URL(where).pathname.split("/").pop();
  const layer = parseLinks(res.headers.get("Link")).find((l) => l.rel === LAYER_REL);
  player.layerUrl = layer ? new URL(layer.url, res.url).href : null;
  quality.disabled = !player.layerUrl;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  helloFor = player.sessionId;
  control.hello(player.sessionId); // rung changes and the capture clock for this session
  if (player.stream === "starting") setState("waiting");
  if (quality.value !== "auto") await applyQuality();
}

// ------------------------------------------------------------------ quality menu

async function applyQuality() {
  renderQuality();
  if (!player.layerUrl) return; // applied once the session exists
  const res = await fetch(player.layerUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ encodingId: quality.value }),
  });
  if (!res.ok) console.warn("layer selection refused", res.status, await res.text());
}

// What is playing now, shown in the menu itself: "Auto · 360p", "180p · switching…".
function renderQuality() {
  const r = player.rung;
  const playing = r && r.rung;
  for (const opt of quality.options) {
    if (opt.value === "auto") {
      opt.textContent = quality.value === "auto" && playing ? `Auto · ${r.rung}` : "Auto";
      continue;
    }
    const rung = player.ladder.find((x) => x.name === opt.value);
    const switching = opt.selected && r && r.mode === "pinned" && r.rung !== opt.value;
    opt.textContent = switching
      ? `${opt.value} · switching…`
      : rung ? `${rung.name} · ${rung.width}×${rung.height}` : opt.value;
  }
  quality.title = r && r.rung ? `playing ${r.rung} (${r.mode})` : "quality";
}

// ------------------------------------------------------------------ control socket

function onControlStatus(status) {
  chat.setOnline(status === "open");
  if (status === "closed" && player.stream === "ended") {
    setState("ended", "will resume automatically if it comes back");
  }
}

function onControlMessage(msg) {
  switch (msg.type) {
    case "state":
      if (Array.isArray(msg.ladder)) setLadder(msg.ladder, msg.codec);
      if (typeof msg.viewers === "number") setViewers(msg.viewers);
      onStream(msg.stream);
      break;
    case "viewers":
      setViewers(msg.count);
      break;
    case "rung":
      player.rung = { rung: msg.rung, target: msg.target, mode: msg.mode };
      renderQuality();
      break;
    case "clock":
      latency.setClock(msg);
      player.clock = { epoch: msg.epoch, rtp_origin: msg.rtp_origin };
      break;
    case "chat":
      chat.add(msg);
      break;
    case "history":
      chat.history(msg.messages);
      break;
    case "error":
      if (msg.code === "unknown_session") {
        // The server does not know our session (it restarted, or dropped us): start over.
        if (helloFor && helloFor === player.sessionId) {
          helloFor = null;
          hangUp();
          reconnectNow();
        }
      } else {
        chat.onError(msg);
      }
      break;
    default:
      break; // newer server, older page: ignore what we do not know
  }
}

function onStream(stream) {
  const before = player.stream;
  player.stream = stream;
  if (stream === "ended") {
    clearTimeout(retryTimer);
    retryTimer = null;
    hangUp();
    video.srcObject = null; // no frozen last frame (and no stale resolution) under "ended"
    showResolution();
    setState("ended", "will resume automatically if it comes back");
    return;
  }
  if (stream === "starting" && player.state !== "playing") setState("waiting");
  // The server is (back) up: connect now if we have no session or it failed.
  const pc = player.pc;
  const dead = !pc || ["failed", "closed"].includes(pc.connectionState);
  if ((dead && !connecting) || (before === "ended" && !connecting)) reconnectNow();
}

function setViewers(count) {
  player.viewers = count;
  viewerCountEl.textContent = typeof count === "number" ? String(count) : "–";
}

// ------------------------------------------------------------------ readouts

function showResolution() {
  resEl.textContent = video.videoWidth ? `${video.videoWidth}×${video.videoHeight}` : "–";
}

function rungIndex() {
  const r = player.rung;
  if (r && r.rung) return player.ladder.findIndex((x) => x.name === r.rung);
  // No word from the server yet: guess from the decoded height.
  const h = stats.current.height;
  const i = player.ladder.findIndex((x) => x.height === h);
  return i >= 0 ? i : null;
}

async function pollStats() {
  if (!player.pc) return;
  const c = await stats.poll(player.pc);
  const idx = rungIndex();
  stats.record(c.kbps, idx === -1 ? null : idx);
  player.stats = {
    ...c,
    rung: player.rung ? player.rung.rung : null,
    target: player.rung ? player.rung.target : null,
    mode: player.rung ? player.rung.mode : quality.value === "auto" ? "auto" : "pinned",
    latencyMs: latency.value,
  };
  if (!statsPanel.hidden) drawStats();
}

function drawStats() {
  stats.render(player.rung, latency.value);
  stats.drawSpark(spark, player.ladder.map((r) => r.name));
}

function showLatency() {
  player.latencyMs = latency.value;
  player.clockOffsetMs = control.offsetMs;
  latencyEl.textContent = player.latencyMs === null ? "–" : `${Math.round(player.latencyMs)} ms`;
  if (!statsPanel.hidden) {
    $("stat-latency").textContent = latencyEl.textContent;
  }
}

// ------------------------------------------------------------------ controls

function setStatsOpen(open) {
  statsPanel.hidden = !open;
  statsToggle.setAttribute("aria-pressed", String(open));
  if (open) drawStats();
}

function renderMute() {
  const muted = video.muted;
  // A broadcast without sound offers nothing to unmute.
  unmuteBig.hidden = !muted || !player.hasAudio;
  muteBtn.disabled = !player.hasAudio;
  muteBtn.querySelector("use").setAttribute("href", muted ? "#i-muted" : "#i-sound");
  muteBtn.setAttribute("aria-label", muted ? "unmute" : "mute");
  muteBtn.title = !player.hasAudio ? "this stream has no sound" : muted ? "unmute (m)" : "mute (m)";
}

function toggleMute(force) {
  video.muted = force === undefined ? !video.muted : force;
  if (!video.muted) video.play().catch(() => {});
  renderMute();
}

function fullscreenElement() {
  return document.fullscreenElement || document.webkitFullscreenElement || null;
}

async function toggleFullscreen() {
  try {
    if (fullscreenElement()) {
      await (document.exitFullscreen || document.webkitExitFullscreen).call(document);
    } else if (stage.requestFullscreen) {
      await stage.requestFullscreen({ navigationUI: "hide" });
    } else if (stage.webkitRequestFullscreen) {
      stage.webkitRequestFullscreen();
    } else if (video.webkitEnterFullscreen) {
      video.webkitEnterFullscreen(); // iPhone: only the video element can go fullscreen
    }
  } catch (err) {
    console.warn("fullscreen:", err);
  }
}

function renderFullscreen() {
  const on = Boolean(fullscreenElement());
  fsBtn.querySelector("use").setAttribute("href", on ? "#i-fs-exit" : "#i-fs");
  fsBtn.setAttribute("aria-label", on ? "exit fullscreen" : "fullscreen");
  stage.classList.toggle("is-fullscreen", on);
}

async function togglePip() {
  try {
    if (document.pictureInPictureElement) await document.exitPictureInPicture();
    else await video.requestPictureInPicture();
  } catch (err) {
    console.warn("picture-in-picture:", err);
  }
}

// Fullscreen hides the controls after a few still seconds; any movement brings them back.
let idleTimer = null;
function wake() {
  stage.classList.remove("idle");
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    if (fullscreenElement() && player.state === "playing") stage.classList.add("idle");
  }, 3000);
}

quality.addEventListener("change", () => { applyQuality().catch(() => {}); });
statsToggle.addEventListener("click", () => setStatsOpen(statsPanel.hidden));
$("stats-close").addEventListener("click", () => setStatsOpen(false));
unmuteBig.addEventListener("click", () => toggleMute(false));
muteBtn.addEventListener("click", () => toggleMute());
fsBtn.addEventListener("click", toggleFullscreen);
video.addEventListener("dblclick", toggleFullscreen);
document.addEventListener("fullscreenchange", renderFullscreen);
document.addEventListener("webkitfullscreenchange", renderFullscreen);
if (!document.pictureInPictureEnabled || video.disablePictureInPicture) pipBtn.hidden = true;
pipBtn.addEventListener("click", togglePip);
stage.addEventListener("pointermove", wake);
stage.addEventListener("pointerdown", wake);
video.addEventListener("volumechange", renderMute);
document.addEventListener("keydown", (ev) => {
  if (ev.target.closest("input, textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    f: toggleFullscreen,
    m: () => toggleMute(),
    s: () => setStatsOpen(statsPanel.hidden),
    p: togglePip,
  };
  const act = actions[ev.key.toLowerCase()];
  if (act) { ev.preventDefault(); act(); }
});

video.addEventListener("playing", () => {
  setState("playing");
  latency.arm();
});
video.addEventListener("resize", showResolution);
setInterval(showResolution, 500);
setInterval(() => { pollStats().catch(() => {}); }, STATS_EVERY_MS);
setInterval(showLatency, READOUT_EVERY_MS);

// pagehide fires on close, reload and navigation (beforeunload is not guaranteed to).
window.addEventListener("pagehide", () => {
  leaving = true;
  hangUp();
  control.stop();
});
// Restored from the back/forward cache: the session was hung up, start a new one.
window.addEventListener("pageshow", (ev) => {
  if (!ev.persisted) return;
  leaving = false;
  control.start();
  reconnectNow();
});

renderMute();
setState("connecting");
loadLadder().catch((err) => console.warn(err));
control.start();
start();
