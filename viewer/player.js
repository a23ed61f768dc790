// WHEP player: POST our offer to /whep, play the answer, pick a rung through the
// session's layer URL. No build step; plain ES module.

const video = document.getElementById("video");
const banner = document.getElementById("banner");
const stateEl = document.getElementById("state");
const resEl = document.getElementById("resolution");
const quality = document.getElementById("quality");

const player = { pc: null, location: null, layerUrl: null };
window.player = player; // for tests and the console

function setState(text) {
  stateEl.textContent = text;
  banner.textContent = text;
  banner.hidden = text === "playing";
}

function parseLinks(header) {
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
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

async function loadLadder() {
  const res = await fetch("/api/ladder");
  const ladder = await res.json();
  for (const rung of ladder.rungs) {
    const opt = document.createElement("option");
    opt.value = rung.name;
    opt.textContent = `${rung.name} (${rung.width}×${rung.height})`;
    quality.append(opt);
  }
}

async function connect() {
  setState("connecting");
  const pc = new RTCPeerConnection({ iceServers: [] });
  player.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    if (ev.track.kind === "video") video.srcObject = new MediaStream([ev.track]);
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") setState("connection failed");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc, 2000);
  const res = await fetch("/whep", {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    setState(`server refused: ${res.status}`);
    return;
  }
  player.location = res.headers.get("Location");
  const layer = parseLinks(res.headers.get("Link"))
    .find((l) => l.rel === "urn:ietf:params:whep:ext:core:layer");
  player.layerUrl = layer ? layer.url : null;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
}

quality.addEventListener("change", async () => {
  if (!player.layerUrl) return;
  await fetch(player.layerUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ encodingId: quality.value }),
  });
});

video.addEventListener("playing", () => setState("playing"));
setInterval(() => {
  if (video.videoWidth) resEl.textContent = `${video.videoWidth}×${video.videoHeight}`;
}, 500);
window.addEventListener("pagehide", () => {
  if (player.location) navigator.sendBeacon && fetch(player.location, { method: "DELETE", keepalive: true });
});

loadLadder().catch(() => {});
connect().catch((err) => setState(`error: ${err.message}`));
