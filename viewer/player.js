// WHEP player: POST our offer to /whep, play the answer, pick a rung through the
// session's layer URL. No build step; plain ES module.

const video = document.getElementById("video");
const banner = document.getElementById("banner");
const stateEl = document.getElementById("state");
const resEl = document.getElementById("resolution");
const quality = document.getElementById("quality");

const LAYER_REL = "urn:ietf:params:whep:ext:core:layer";
const RETRY_MS = [1000, 2000, 5000, 10000];
const DISCONNECTED_GRACE_MS = 5000;

// Tests and the console reach the live session through window.player.
const player = { pc: null, location: null, layerUrl: null };
window.player = player;

let attempt = 0;
let retryTimer = null;
let leaving = false;

function setState(text) {
  stateEl.textContent = text;
  banner.textContent = text;
  banner.hidden = text === "playing";
}

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

async function loadLadder() {
  const res = await fetch("/api/ladder");
  if (!res.ok) throw new Error(`ladder: HTTP ${res.status}`);
  const ladder = await res.json();
  for (const rung of ladder.rungs) {
    const opt = document.createElement("option");
    opt.value = rung.name;
    opt.textContent = `${rung.name} (${rung.width}×${rung.height})`;
    quality.append(opt);
  }
}

// Tell the server we are gone. keepalive lets the request outlive the page.
function hangUp() {
  const location = player.location;
  player.location = null;
  player.layerUrl = null;
  if (location) {
    fetch(location, { method: "DELETE", keepalive: true }).catch(() => {});
  }
  if (player.pc) {
    player.pc.close();
    player.pc = null;
  }
}

function scheduleRetry(reason) {
  if (leaving || retryTimer) return;
  const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
  attempt += 1;
  setState(`${reason}; retrying in ${Math.round(delay / 1000)} s`);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    connect().catch((err) => scheduleRetry(`error: ${err.message}`));
  }, delay);
}

async function connect() {
  hangUp();
  setState("connecting");
  const pc = new RTCPeerConnection({ iceServers: [] });
  player.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    if (ev.track.kind !== "video") return;
    video.srcObject = new MediaStream([ev.track]);
    video.play().catch(() => {}); // muted, so autoplay is allowed
  };
  pc.onconnectionstatechange = () => {
    if (pc !== player.pc) return;
    if (pc.connectionState === "connected") {
      attempt = 0;
      if (video.srcObject && !video.paused && video.readyState >= 3) setState("playing");
    }
    if (pc.connectionState === "disconnected") {
      // Chromium takes ~30 s to declare "failed"; a live player should not wait that long.
      setState("connection interrupted");
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
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    let detail = "";
    try { detail = (await res.json()).error || ""; } catch { /* not JSON */ }
    pc.close();
    player.pc = null;
    const text = `server refused: ${res.status}${detail ? ` (${detail})` : ""}`;
    if (res.status >= 500) scheduleRetry(text); // e.g. 503 while the capture restarts
    else setState(text);
    return;
  }
  // Location is relative to the WHEP endpoint's URL.
  const location = new URL(res.headers.get("Location"), res.url).href;
  if (pc !== player.pc) {
    // Superseded (page hidden or a newer attempt) while the offer was in flight.
    fetch(location, { method: "DELETE", keepalive: true }).catch(() => {});
    return;
  }
  player.location = location;
  const layer = parseLinks(res.headers.get("Link")).find((l) => l.rel === LAYER_REL);
  player.layerUrl = layer ? new URL(layer.url, res.url).href : null;
  quality.disabled = !player.layerUrl;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  if (quality.value !== "auto") await applyQuality();
}

async function applyQuality() {
  if (!player.layerUrl) return; // applied once the session exists
  const res = await fetch(player.layerUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ encodingId: quality.value }),
  });
  if (!res.ok) console.warn("layer selection refused", res.status, await res.text());
}

function showResolution() {
  resEl.textContent = video.videoWidth ? `${video.videoWidth}×${video.videoHeight}` : "–";
}

quality.addEventListener("change", () => { applyQuality().catch(() => {}); });
video.addEventListener("playing", () => setState("playing"));
video.addEventListener("resize", showResolution);
setInterval(showResolution, 500);

// pagehide fires on close, reload and navigation (beforeunload is not guaranteed to).
window.addEventListener("pagehide", () => { leaving = true; hangUp(); });
// Restored from the back/forward cache: the session was hung up, start a new one.
window.addEventListener("pageshow", (ev) => {
  if (!ev.persisted) return;
  leaving = false;
  attempt = 0;
  connect().catch((err) => scheduleRetry(`error: ${err.message}`));
});

loadLadder().catch((err) => console.warn(err));
connect().catch((err) => scheduleRetry(`error: ${err.message}`));
