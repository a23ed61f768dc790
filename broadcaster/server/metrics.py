"""Prometheus text exposition for /metrics (no client library needed for a few gauges)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from .broadcast import Broadcast
from .looplag import LoopLag
from .pool import WorkerStats


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
    # Prometheus text spells a missing quantile NaN (Python would print "nan").
    return "NaN" if math.isnan(value) else repr(value)


def _loop_lag(lag: LoopLag) -> list[str]:
    s = lag.summary()
    name = "broadcaster_loop_lag_seconds"
    window = f"{lag.window:g} s"
    return [
        *_family(
            name,
            "summary",
            f"How late the event loop ran a {lag.interval * 1000:g} ms timer; "
            f"quantiles over the last {window}.",
            [
                f'{name}{{quantile="0.5"}} {_number(s.p50)}',
                f'{name}{{quantile="0.99"}} {_number(s.p99)}',
                f"{name}_sum {lag.total!r}",
                f"{name}_count {lag.count}",
            ],
        ),
        *_family(
            "broadcaster_loop_lag_max_seconds",
            "gauge",
            f"Largest event-loop lag over the last {window} (a stall is one late sample).",
            [f"broadcaster_loop_lag_max_seconds {_number(s.max)}"],
        ),
    ]


def _workers(workers: Sequence[WorkerStats]) -> list[str]:
    def each(value: Callable[[WorkerStats], float]) -> list[str]:
        return [f'{{worker="{w.index}"}} {_number(float(value(w)))}' for w in workers]

    families = [
        ("up", "gauge", "1 while the fan-out worker runs.", lambda w: int(w.up)),
        ("viewers", "gauge", "Viewer sessions the worker holds.", lambda w: w.viewers),
        ("cpu_seconds_total", "counter", "CPU time the worker used.", lambda w: w.cpu_s),
        (
            "loop_lag_p99_seconds",
            "gauge",
            "99th percentile of the worker's event-loop lag over the last 10 s.",
            lambda w: w.lag_p99,
        ),
        ("loop_lag_max_seconds", "gauge", "Largest lag over the last 10 s.", lambda w: w.lag_max),
        (
            "restarts_total",
            "counter",
            "Times the worker died and was restarted.",
            lambda w: w.restarts,
        ),
    ]
    lines: list[str] = []
    for name, kind, text, value in families:
        full = f"broadcaster_worker_{name}"
        lines += _family(full, kind, text, [full + sample for sample in each(value)])
    return lines


def render(
    broadcast: Broadcast,
    viewers: int,
    loop_lag: LoopLag | None = None,
    workers: Sequence[WorkerStats] | None = None,
) -> str:
    """The /metrics body; ``loop_lag`` adds the event-loop lag families, ``workers`` the
    per-worker ones (viewers, CPU, loop lag) when fan-out runs in worker processes."""
    names = [_label(r.name) for r in broadcast.ladder]

    def per_rung(metric: str, values: Iterable[float]) -> list[str]:
        return [f'{metric}{{rung="{n}"}} {v}' for n, v in zip(names, values, strict=True)]

    stats = broadcast.stats
    encode_ms = stats.encode_ms if stats else [0.0] * len(names)
    fps = stats.fps if stats else [0.0] * len(names)
    kbps = stats.kbps if stats else [0.0] * len(names)
    lines = [
        *_family(
            "broadcaster_viewers",
            "gauge",
            "Connected viewer sessions.",
            [f"broadcaster_viewers {viewers}"],
        ),
        *_family(
            "broadcaster_viewers_per_rung",
            "gauge",
            "Viewers currently receiving each rung.",
            per_rung("broadcaster_viewers_per_rung", broadcast.viewers_per_rung()),
        ),
        *_family(
            "broadcaster_frames_out_total",
            "counter",
            "Encoded frames (packets of the bitstream) handed to viewers, per rung.",
            per_rung("broadcaster_frames_out_total", broadcast.frames_out),
        ),
        *_family(
            "broadcaster_bytes_out_total",
            "counter",
            "Encoded bytes handed to viewers, per rung (before RTP/SRTP overhead).",
            per_rung("broadcaster_bytes_out_total", broadcast.bytes_out),
        ),
        *_family(
            "broadcaster_keyframe_requests_total",
            "counter",
            "Keyframe requests sent to the encoder (new viewers, PLI/FIR, switches).",
            per_rung("broadcaster_keyframe_requests_total", broadcast.keyframe_requests),
        ),
        *_family(
            "broadcaster_keyframes_total",
            "counter",
            "Keyframes produced by each rung.",
            per_rung("broadcaster_keyframes_total", broadcast.keyframes_seen),
        ),
        *_family(
            "broadcaster_encode_milliseconds",
            "gauge",
            "Mean encode time per frame over the last second.",
            per_rung("broadcaster_encode_milliseconds", encode_ms),
        ),
        *_family(
            "broadcaster_encode_fps",
            "gauge",
            "Frames encoded per second.",
            per_rung("broadcaster_encode_fps", fps),
        ),
        *_family(
            "broadcaster_encode_kbps",
            "gauge",
            "Encoded bitrate over the last second.",
            per_rung("broadcaster_encode_kbps", kbps),
        ),
        *_family(
            "broadcaster_switches_total",
            "counter",
            "Rung switches carried out, by reason.",
            [
                f'broadcaster_switches_total{{reason="{_label(r)}"}} {n}'
                for r, n in sorted(broadcast.switches.items())
            ],
        ),
        *_family(
            "broadcaster_capture_healthy",
            "gauge",
            "1 while frames are flowing.",
            [f"broadcaster_capture_healthy {int(broadcast.healthy)}"],
        ),
        *_family(
            "broadcaster_source_live",
            "gauge",
            "1 while the source delivers pictures; 0 while a slate is sent and it is reopened.",
            [f"broadcaster_source_live {int(broadcast.source_state == 'live')}"],
        ),
        *_family(
            "broadcaster_audio_frames_total",
            "counter",
            "Opus frames (20 ms) received from the capture, each encoded once.",
            [f"broadcaster_audio_frames_total {broadcast.audio_frames}"],
        ),
        *_family(
            "broadcaster_audio_packets_sent_total",
            "counter",
            "Audio RTP packets sent to viewers (one per frame per listening viewer).",
            [f"broadcaster_audio_packets_sent_total {broadcast.audio_packets_out}"],
        ),
        *_family(
            "broadcaster_source_losses_total",
            "counter",
            "Times the source was lost mid-stream.",
            [f"broadcaster_source_losses_total {broadcast.source_losses}"],
        ),
        *_family(
            "broadcaster_rung_available",
            "gauge",
            "1 while the rung's encoder works; 0 once it failed and the rung left the ladder.",
            per_rung("broadcaster_rung_available", [int(ok) for ok in broadcast.rung_live]),
        ),
    ]
    if loop_lag is not None:
        lines += _loop_lag(loop_lag)
    if workers:
        lines += _workers(workers)
    return "\n".join(lines) + "\n"
