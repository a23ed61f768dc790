"""Prometheus text exposition for /metrics (no client library needed for a few gauges)."""

from __future__ import annotations

from collections.abc import Iterable

from .broadcast import Broadcast


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render(broadcast: Broadcast, viewers: int) -> str:
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
    ]
    return "\n".join(lines) + "\n"
