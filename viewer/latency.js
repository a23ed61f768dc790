// Glass-to-glass latency: capture instant -> the moment the frame is shown.
//
// requestVideoFrameCallback gives each shown frame's RTP timestamp and its display time
// (page clock). The server's `clock` message maps RTP timestamps to the capture wall
// clock (server clock):
//     captured = epoch + ((rtpTimestamp - rtp_origin) mod 2^32) / rate
// and the control socket's ping/pong estimates server clock - page clock, so the two
// instants are compared on one clock even when the viewer is on another machine.

import { pageNowMs } from "./ws.js";

const WINDOW_MS = 1000; // the readout is the median over this much of recent frames
const STALE_MS = 3000; // no measurable frame for this long: show nothing, not an old value
const TWO32 = 2 ** 32;
// Per-frame values kept for whoever drains them (bench/latency.py): ~2 min at 30 fps.
const LOG_MAX = 4000;

export class LatencyMeter {
  constructor(video, control) {
    this.video = video;
    this.control = control;
    this.clock = null; // {epoch (s), rtp_origin, rate}
    this.samples = []; // {at: page ms, ms: latency}
    this.log = []; // every frame's latency since the last drain()
    this.medianMs = null;
    this.lastSampleAt = 0;
    this.handle = null;
    this.supported = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
    this.onFrame = this.onFrame.bind(this);
  }

  // (Re)arm the per-frame callback; called whenever a new stream starts playing.
  arm() {
    if (!this.supported) return;
    if (this.handle !== null) this.video.cancelVideoFrameCallback(this.handle);
    this.handle = this.video.requestVideoFrameCallback(this.onFrame);
  }

  setClock(clock) {
    const rate = Number(clock.rate) || 90000;
    const epoch = Number(clock.epoch);
    const origin = Number(clock.rtp_origin);
    if (!Number.isFinite(epoch) || !Number.isFinite(origin)) return;
    const changed = !this.clock || this.clock.rtp_origin !== origin;
    this.clock = { epoch, rtp_origin: origin, rate };
    if (changed) this.samples = []; // another session's origin: old samples meant nothing
  }

  reset() {
    this.clock = null;
    this.samples = [];
    this.medianMs = null;
  }

  onFrame(now, meta) {
    this.handle = this.video.requestVideoFrameCallback(this.onFrame);
    const offset = this.control.offsetMs;
    if (!this.clock || offset === null || typeof meta.rtpTimestamp !== "number") return;
    const shownPage = performance.timeOrigin + (meta.expectedDisplayTime ?? now);
    const shown = shownPage + offset; // on the server's clock
    const { epoch, rtp_origin: origin, rate } = this.clock;
    const ticks = (meta.rtpTimestamp - origin) >>> 0; // mod 2^32
    let captured = epoch * 1000 + (ticks / rate) * 1000;
    // RTP time wraps every 2^32 ticks (13.25 h at 90 kHz): take the wrap nearest now.
    const wrapMs = (TWO32 / rate) * 1000;
    captured += Math.round((shown - captured) / wrapMs) * wrapMs;
    this.samples.push({ at: shownPage, ms: shown - captured });
    this.log.push(shown - captured);
    if (this.log.length > LOG_MAX) this.log.shift();
    this.lastSampleAt = pageNowMs();
    while (this.samples.length && this.samples[0].at < shownPage - WINDOW_MS) this.samples.shift();
    const sorted = this.samples.map((s) => s.ms).sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    this.medianMs = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  // Every frame's latency (ms) since the previous call.
  drain() {
    const out = this.log;
    this.log = [];
    return out;
  }

  // The current readout, or null when there is nothing recent to show.
  get value() {
    if (this.medianMs === null || pageNowMs() - this.lastSampleAt > STALE_MS) return null;
    return Math.round(this.medianMs * 10) / 10;
  }
}
