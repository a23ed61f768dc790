"""Check a viewer's SDP offer before aiortc sees it.

aiortc's parser raises half a dozen exception types on bad SDP, accepts offers without
a DTLS fingerprint (failing later on a bare assert) and can block the event loop for
seconds on thousands of m-lines. A WHEP viewer needs little: one video m-line, at most
one audio m-line, DTLS-SRTP, ICE credentials. Anything else is refused here with a
reason, before a peer connection exists.
"""

from __future__ import annotations

MAX_LINES = 1000  # a real offer has ~100-200
MAX_LINE_LENGTH = 4096
PROTO = "UDP/TLS/RTP/SAVPF"
KINDS = ("audio", "video")


def check_offer(sdp: str) -> str | None:
    """None if the offer is fit for a viewer, else why not (one line for a 400)."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_LINES:
        return f"offer has {len(lines)} lines (at most {MAX_LINES})"
    if not lines[0].startswith("v=0"):
        return "offer must start with v=0"
    if any(len(line) > MAX_LINE_LENGTH for line in lines):
        return f"offer has a line longer than {MAX_LINE_LENGTH} characters"
    media = [line for line in lines if line.startswith("m=")]
    counts = dict.fromkeys(KINDS, 0)
    for line in media:
        parts = line[2:].split()
        if len(parts) < 4:
            return f"malformed m-line: {line[:80]!r}"
        kind, proto = parts[0], parts[2]
        if kind not in KINDS:
            return f"unsupported m-line kind {kind!r} (only audio and video)"
        if proto != PROTO:
            return f"unsupported transport {proto!r} (need {PROTO})"
        counts[kind] += 1
    if counts["video"] != 1:
        return f"offer must have exactly one video m-line, has {counts['video']}"
    if counts["audio"] > 1:
        return f"offer may have at most one audio m-line, has {counts['audio']}"
    for attr, what in (
        ("a=fingerprint:", "a DTLS fingerprint (a=fingerprint)"),
        ("a=setup:", "a DTLS role (a=setup)"),
        ("a=ice-ufrag:", "ICE credentials (a=ice-ufrag)"),
        ("a=ice-pwd:", "ICE credentials (a=ice-pwd)"),
    ):
        if not any(line.startswith(attr) for line in lines):
            return f"offer lacks {what}"
    return None
