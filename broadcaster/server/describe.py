"""A viewer session as JSON (/api/viewers): rung, mode, feedback, the policy's decision."""

from __future__ import annotations

from typing import Any

from .feedback import Snapshot
from .session import ViewerSession


def _rung_name(session: ViewerSession, index: int | None) -> str | None:
    return None if index is None else session.broadcast.ladder[index].name


def _snapshot_json(s: Snapshot) -> dict[str, Any]:
    return {
        "t": round(s.t, 3),
        "remb_kbps": None if s.remb_bps is None else round(s.remb_bps / 1000, 1),
        "loss": None if s.loss is None else round(s.loss, 4),
        "reports": s.reports,
        "expected": s.expected,
        "rtt_ms": None if s.rtt_ms is None else round(s.rtt_ms, 1),
        "nack_per_s": round(s.nack_per_s, 1),
        "sent_kbps": round(s.sent_bps / 1000, 1),
        "probe_kbps": round(s.probe_bps / 1000, 1),
        "rtx_kbps": round(s.rtx_bps / 1000, 1),
    }


def viewer_json(session: ViewerSession, history: bool = False) -> dict[str, Any]:
    switcher = session.switcher
    out: dict[str, Any] = {
        "id": session.public_id,
        "rung": _rung_name(session, switcher.current),
        "target": _rung_name(session, switcher.target),
        "mode": session.mode,
        "state": session.pc.connectionState,
        "since": session.created,
        "rtp_origin": session.rtp_origin,
        "switches": [
            {
                "at": s.at,
                "from": _rung_name(session, s.from_rung),
                "to": _rung_name(session, s.to_rung),
                "reason": s.reason,
            }
            for s in switcher.switches[-10:]
        ],
    }
    abr = session.abr
    snap = abr.history[-1] if abr is not None and abr.history else None
    if abr is not None and snap is not None:
        out.update(
            {
                "remb_kbps": None if snap.remb_bps is None else round(snap.remb_bps / 1000, 1),
                "loss": snap.loss,
                "rtt_ms": None if snap.rtt_ms is None else round(snap.rtt_ms, 1),
                "jitter_ms": None if snap.jitter_ms is None else round(snap.jitter_ms, 1),
                "nack_per_s": round(snap.nack_per_s, 1),
                "sent_kbps": round(snap.sent_bps / 1000, 1),
                "probe_kbps": round(snap.probe_bps / 1000, 1),
                "decision": abr.last.reason if abr.last else None,
            }
        )
        if history:
            out["history"] = [_snapshot_json(s) for s in abr.history]
    return out
