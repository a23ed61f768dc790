// The control socket (/ws): stream state, viewer count, rung changes, the capture clock and
// chat, plus an NTP-style estimate of the server's clock. Reconnects on its own.

const RETRY_MS = [500, 1000, 2000, 3000, 5000];
// A burst of pings right after connecting gives a usable offset within half a second;
// after that one every few seconds keeps it fresh without costing anything.
const FIRST_PINGS = 5;
const FIRST_PING_GAP_MS = 100;
const PING_EVERY_MS = 3000;
const OFFSET_SAMPLES = 12;

// The page's clock in ms since the epoch, on the same timeline as performance.now()
// (requestVideoFrameCallback times are performance times): Date.now() can step.
export function pageNowMs() {
  return performance.timeOrigin + performance.now();
}

export class ControlSocket {
  constructor(url, onMessage, onStatus) {
    this.url = url;
    this.onMessage = onMessage;
    this.onStatus = onStatus; // ("open" | "closed")
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.session = null;
    this.samples = []; // {offset, rtt}
    this.offsetMs = null; // server clock = page clock + offsetMs
    this.rttMs = null;
    this.stopped = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    if (this.ws || this.retryTimer) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      console.warn("ws:", err);
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.samples = [];
      if (this.session) this.send({ type: "hello", session: this.session });
      this.schedulePings();
      this.onStatus("open");
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (!msg || typeof msg.type !== "string") return;
      if (msg.type === "pong") this.onPong(msg);
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearTimeout(this.pingTimer);
      this.onStatus("closed", ev.code);
      this.retry();
    };
    // onerror is always followed by onclose; nothing to do here.
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.pingTimer);
    this.retryTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }

  retry() {
    if (this.stopped || this.retryTimer) return;
    const base = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
    this.attempt += 1;
    // Jitter: a restarted server should not get every page back in the same millisecond.
    const delay = base * (0.8 + Math.random() * 0.4);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.start();
    }, delay);
  }

  send(msg) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  hello(sessionId) {
    this.session = sessionId;
    if (sessionId) this.send({ type: "hello", session: sessionId });
  }

  schedulePings() {
    let sent = 0;
    const tick = () => {
      if (!this.open) return;
      this.send({ type: "ping", t0: pageNowMs() });
      sent += 1;
      this.pingTimer = setTimeout(tick, sent < FIRST_PINGS ? FIRST_PING_GAP_MS : PING_EVERY_MS);
    };
    tick();
  }

  onPong(msg) {
    const t1 = pageNowMs();
    const t0 = Number(msg.t0);
    const server = Number(msg.server_ms);
    if (!Number.isFinite(t0) || !Number.isFinite(server) || t1 < t0) return;
    // NTP: the server read its clock somewhere inside [t0, t1]; assume the middle. The
    // sample with the smallest round trip has the smallest possible error (rtt / 2).
    this.samples.push({ offset: server - (t0 + t1) / 2, rtt: t1 - t0 });
    if (this.samples.length > OFFSET_SAMPLES) this.samples.shift();
    const best = this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offsetMs = best.offset;
    this.rttMs = best.rtt;
  }
}
