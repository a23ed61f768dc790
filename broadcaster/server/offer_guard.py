"""Check a viewer's SDP offer before aiortc sees it.

aiortc's parser raises half a dozen exception types on bad SDP, accepts offers without
a DTLS fingerprint (failing later on a bare assert) and can block the event loop for
seconds on thousands of m-lines. A WHEP viewer needs little: one video m-line it
receives, at most one audio m-line, DTLS-SRTP with a usable fingerprint, ICE
credentials. Anything else is refused here with a reason, before a peer connection
exists.

The guard reads the offer the way aiortc does (``str.splitlines``): a guard that split
only at CRLF/LF would see one harmless line where aiortc sees hundreds of m-sections
joined by U+2028 or a vertical tab.
"""

from __future__ import annotations

import re

# A real offer has ~50 (aiortc) to ~210 (Chromium: video + audio, 40 codecs) lines. The
# limits bound what aiortc spends on one offer: it parses, negotiates and answers while
# the event loop waits (~0.1 ms a candidate, ~0.05 ms an rtpmap on this machine).
MAX_LINES = 500
MAX_LINE_LENGTH = 4096
# The server sends ICE checks to every candidate: a browser offers a few per network
# interface; hundreds would turn an offer into a packet flood at an address of the
# offerer's choosing.
MAX_CANDIDATES = 64
MAX_PAYLOAD_TYPES = 128  # per m-line: that is every RTP payload type that may be used
PROTO = "UDP/TLS/RTP/SAVPF"
KINDS = ("audio", "video")
# aiortc checks the DTLS certificate against every fingerprint it knows the hash of and
# needs at least one: an offer with none usable, or one malformed, can never connect.
FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
SETUP_ROLES = ("actpass", "active", "passive")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
RECEIVES = ("sendrecv", "recvonly")  # the viewer's side: it must receive our video
# RFC 8839 5.4: ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4-256 of them, pwd 22-256.
ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
HEX_BYTE = re.compile(r"[0-9A-Fa-f]{2}")
# Control characters have no place in SDP, and several of them (VT, FF, FS, GS, RS,
# NEL, U+2028, U+2029) are line breaks to str.splitlines but not to other readers.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


def check_offer(sdp: str) -> str | None:
    """None if the offer is fit for a viewer, else why not (one line for a 400)."""
    control = CONTROL.search(sdp)
    if control is not None:
        return f"offer contains control character U+{ord(control.group()):04X}"
    lines = sdp.splitlines()
    if len(lines) > MAX_LINES:
        return f"offer has {len(lines)} lines (at most {MAX_LINES})"
    if not lines or not lines[0].startswith("v=0"):
        return "offer must start with v=0"
    if any(len(line) > MAX_LINE_LENGTH for line in lines):
        return f"offer has a line longer than {MAX_LINE_LENGTH} characters"
    counts = dict.fromkeys(KINDS, 0)
    candidates = 0
    usable_fingerprints = 0
    video_directions: list[str] = []
    kind = ""  # of the m-section being read ("" at session level)
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4:
                return f"malformed m-line: {line[:80]!r}"
            kind, proto = parts[0], parts[2]
            if kind not in KINDS:
                return f"unsupported m-line kind {kind[:20]!r} (only audio and video)"
            if proto != PROTO:
                return f"unsupported transport {proto[:40]!r} (need {PROTO})"
            if len(parts) - 3 > MAX_PAYLOAD_TYPES:
                return f"{kind} m-line lists more than {MAX_PAYLOAD_TYPES} payload types"
            counts[kind] += 1
        elif line.startswith("a=candidate:"):
            candidates += 1
            if candidates > MAX_CANDIDATES:
                return f"offer has more than {MAX_CANDIDATES} ICE candidates"
        elif line.startswith("a=fingerprint:"):
            value = line[len("a=fingerprint:") :]
            problem = _fingerprint_problem(value)
            if problem is not None:
                return problem
            usable_fingerprints += value.split()[0].lower() in FINGERPRINT_BYTES
        elif line.startswith("a=ice-ufrag:"):
            if not ICE_UFRAG.fullmatch(line[len("a=ice-ufrag:") :]):
                return "malformed a=ice-ufrag (4-256 letters, digits, + or /)"
        elif line.startswith("a=ice-pwd:"):
            if not ICE_PWD.fullmatch(line[len("a=ice-pwd:") :]):
                return "malformed a=ice-pwd (22-256 letters, digits, + or /)"
        elif line.startswith("a=setup:"):
            if line[len("a=setup:") :] not in SETUP_ROLES:
                return f"a=setup must be one of {', '.join(SETUP_ROLES)}"
        elif kind == "video" and line[2:] in DIRECTIONS and line.startswith("a="):
            video_directions.append(line[2:])
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
    if not usable_fingerprints:
        return f"offer has no fingerprint aiortc can check ({', '.join(FINGERPRINT_BYTES)})"
    if len(video_directions) != 1 or video_directions[0] not in RECEIVES:
        return "video m-line must be recvonly or sendrecv (a viewer receives video)"
    return None


def check_trickle(fragment: str, known: int = 0) -> str | None:
    """None if a trickle-ICE fragment (WHEP PATCH) may be applied to a session that
    already has ``known`` remote candidates, else why not (one line for a 400).

    aioice re-sorts its check list for every candidate added (quadratic in the count)
    and checks every one: 700 candidates in one 36 KiB PATCH held the event loop for
    100-250 ms, and PATCHes repeated without bound would grow both forever.
    """
    control = CONTROL.search(fragment)
    if control is not None:
        return f"fragment contains control character U+{ord(control.group()):04X}"
    lines = fragment.splitlines()
    if len(lines) > MAX_LINES:
        return f"fragment has {len(lines)} lines (at most {MAX_LINES})"
    candidates = sum(line.strip().startswith("a=candidate:") for line in lines)
    if known + candidates > MAX_CANDIDATES:
        return f"a session may have at most {MAX_CANDIDATES} ICE candidates"
    return None


def _fingerprint_problem(value: str) -> str | None:
    parts = value.split()
    if len(parts) != 2:
        return "malformed a=fingerprint (need: hash-function fingerprint)"
    algorithm, digest = parts[0].lower(), parts[1]
    size = FINGERPRINT_BYTES.get(algorithm)
    if size is None:
        return None  # another hash (sha-1): aiortc ignores it, others may be usable
    octets = digest.split(":")
    if len(octets) != size or not all(HEX_BYTE.fullmatch(o) for o in octets):
        return f"malformed {algorithm} fingerprint (need {size} colon-separated hex bytes)"
    return None
