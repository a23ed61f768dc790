// Receive-side statistics from RTCPeerConnection.getStats(), once a second, kept for the
// last minute so the overlay's sparkline has a history the moment it is opened.

const HISTORY_S = 60;

const $ = (id) => document.getElementById(id);

function fmtBitrate(kbps) {
  if (kbps === null || kbps === undefined) return "–";
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(2)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

export class StatsMonitor {
  constructor() {
    this.prev = null; // previous inbound-rtp report + time
    this.history = []; // {t, kbps, rung}  rung: ladder index or null
    this.current = {
      width: 0, height: 0, fps: 0, kbps: 0, rttMs: null, lossPct: 0,
      freezes: 0, framesDecoded: 0, framesDropped: 0, jitterMs: null, packetsLost: 0,
      audioKbps: null, audioLevel: null, // null: no audio track
    };
    this.prevAudio = null;
  }

  reset() {
    // A new peer connection starts its counters at zero.
    this.prev = null;
    this.prevAudio = null;
    this.current.audioKbps = null;
    this.current.audioLevel = null;
  }

  async poll(pc) {
    if (!pc) return this.current;
    let inbound = null;
    let audio = null;
    let pair = null;
    let transportPair = null;
    const reports = await pc.getStats();
    for (const r of reports.values()) {
      if (r.type === "inbound-rtp" && r.kind === "video") inbound = r;
      else if (r.type === "inbound-rtp" && r.kind === "audio") audio = r;
      else if (r.type === "transport" && r.selectedCandidatePairId) transportPair = r.selectedCandidatePairId;
      else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
    }
    if (transportPair && reports.get(transportPair)) pair = reports.get(transportPair);
    const c = this.current;
    if (inbound) {
      const now = inbound.timestamp;
      const p = this.prev;
      if (p && now > p.timestamp) {
        const dt = (now - p.timestamp) / 1000;
        c.kbps = Math.max(0, ((inbound.bytesReceived - p.bytesReceived) * 8) / 1000 / dt);
        c.fps = Math.max(0, (inbound.framesDecoded - p.framesDecoded) / dt);
        const lost = (inbound.packetsLost || 0) - (p.packetsLost || 0);
        const got = (inbound.packetsReceived || 0) - (p.packetsReceived || 0);
        c.lossPct = lost + got > 0 ? (100 * Math.max(0, lost)) / (lost + got) : 0;
      }
      this.prev = inbound;
      c.width = inbound.frameWidth || 0;
      c.height = inbound.frameHeight || 0;
      c.freezes = inbound.freezeCount || 0;
      c.framesDecoded = inbound.framesDecoded || 0;
      c.framesDropped = inbound.framesDropped || 0;
      c.packetsLost = inbound.packetsLost || 0;
      c.jitterMs = inbound.jitter !== undefined ? inbound.jitter * 1000 : null;
    }
    if (audio) {
      const p = this.prevAudio;
      if (p && audio.timestamp > p.timestamp) {
        const dt = (audio.timestamp - p.timestamp) / 1000;
        c.audioKbps = Math.max(0, ((audio.bytesReceived - p.bytesReceived) * 8) / 1000 / dt);
      }
      this.prevAudio = audio;
      c.audioLevel = typeof audio.audioLevel === "number" ? audio.audioLevel : null;
    }
    if (pair && typeof pair.currentRoundTripTime === "number") {
      c.rttMs = pair.currentRoundTripTime * 1000;
    }
    return c;
  }

  record(kbps, rung) {
    const t = performance.now();
    this.history.push({ t, kbps, rung });
    while (this.history.length && this.history[0].t < t - HISTORY_S * 1000) this.history.shift();
  }

  // Overlay text. `rung` is {rung, target, mode} from the server (or a guess), latency ms.
  render(rung, latencyMs) {
    const c = this.current;
    $("stat-resolution").textContent = c.width ? `${c.width}×${c.height}` : "–";
    $("stat-fps").textContent = c.fps ? `${c.fps.toFixed(1)} fps` : "–";
    $("stat-bitrate").textContent = fmtBitrate(c.kbps || null);
    let rungText = "–";
    if (rung && rung.rung) {
      rungText = `${rung.rung} · ${rung.mode}`;
      if (rung.target && rung.target !== rung.rung) rungText += ` → ${rung.target}`;
    }
    $("stat-rung").textContent = rungText;
    $("stat-latency").textContent = latencyMs === null ? "–" : `${Math.round(latencyMs)} ms`;
    $("stat-rtt").textContent =
      c.rttMs === null ? "–" : c.rttMs < 1 ? "< 1 ms" : `${Math.round(c.rttMs)} ms`;
    $("stat-loss").textContent = `${c.lossPct.toFixed(2)} %`;
    $("stat-freezes").textContent = String(c.freezes);
    // Level in dBFS: what is playing now (the element may be muted; the stream is not).
    let audioText = "none";
    if (c.audioKbps !== null) {
      const db = c.audioLevel > 0 ? `${Math.round(20 * Math.log10(c.audioLevel))} dBFS` : "silent";
      audioText = `opus · ${fmtBitrate(c.audioKbps)} · ${db}`;
    }
    $("stat-audio").textContent = audioText;
  }

  // Bitrate as a filled area, the rung as a step line on its own scale (best rung on top).
  drawSpark(canvas, rungNames) {
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 300;
    const cssH = canvas.clientHeight || 72;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const styles = getComputedStyle(canvas);
    const bitrateColor = styles.getPropertyValue("--spark-bitrate").trim() || "#4da3ff";
    const rungColor = styles.getPropertyValue("--spark-rung").trim() || "#ffb84d";
    const gridColor = styles.getPropertyValue("--spark-grid").trim() || "#ffffff22";
    const pad = { l: 2, r: 34, t: 14, b: 6 };
    const w = cssW - pad.l - pad.r;
    const h = cssH - pad.t - pad.b;
    const now = performance.now();
    const x = (t) => pad.l + w * (1 - (now - t) / (HISTORY_S * 1000));

    ctx.strokeStyle = gridColor;
    ctx.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = Math.round(pad.t + (h * i) / 2) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + w, y); ctx.stroke();
    }
    const pts = this.history;
    const max = Math.max(500, ...pts.map((p) => p.kbps || 0)) * 1.1;
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillStyle = "#ffffff99";
    ctx.textBaseline = "top";
    ctx.fillText(fmtBitrate(max / 1.1), pad.l + 2, 0);
    if (pts.length >= 2) {
      const y = (kbps) => pad.t + h * (1 - (kbps || 0) / max);
      const grad = ctx.createLinearGradient(0, pad.t, 0, pad.t + h);
      grad.addColorStop(0, bitrateColor + "88");
      grad.addColorStop(1, bitrateColor + "08");
      ctx.beginPath();
      ctx.moveTo(x(pts[0].t), pad.t + h);
      for (const p of pts) ctx.lineTo(x(p.t), y(p.kbps));
      ctx.lineTo(x(pts[pts.length - 1].t), pad.t + h);
      ctx.closePath();
      ctx.fillStyle = grad;
      ctx.fill();
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.kbps)) : ctx.moveTo(x(p.t), y(p.kbps))));
      ctx.strokeStyle = bitrateColor;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
    // Rung: index 0 (best) at the top, the last rung at the bottom; labels on the right.
    const n = Math.max(1, rungNames.length);
    const ry = (i) => pad.t + (n === 1 ? h / 2 : (h * i) / (n - 1));
    ctx.textBaseline = "middle";
    ctx.fillStyle = rungColor;
    rungNames.forEach((name, i) => ctx.fillText(name, pad.l + w + 6, ry(i)));
    ctx.beginPath();
    let started = false;
    let prevY = 0;
    for (const p of pts) {
      if (p.rung === null || p.rung === undefined) { started = false; continue; }
      const px = x(p.t);
      const py = ry(p.rung);
      if (!started) { ctx.moveTo(px, py); started = true; } else { ctx.lineTo(px, prevY); ctx.lineTo(px, py); }
      prevY = py;
    }
    ctx.strokeStyle = rungColor;
    ctx.lineWidth = 2;
    ctx.setLineDash([]);
    ctx.stroke();
  }
}
