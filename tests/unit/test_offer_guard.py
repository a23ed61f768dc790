"""The offer guard: what a WHEP viewer's offer must look like before aiortc parses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc.sdp import grouplines
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.server.offer_guard import (
    MAX_CANDIDATES,
    MAX_LINES,
    check_offer,
    check_trickle,
)

VALID = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
    "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=mid:1", "a=recvonly",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
    "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "",
])  # fmt: skip


def without(prefix: str) -> str:
    return "\r\n".join(line for line in VALID.split("\r\n") if not line.startswith(prefix))


def test_a_browser_like_offer_passes() -> None:
    assert check_offer(VALID) is None
    assert check_offer(VALID.replace("\r\n", "\n")) is None  # bare LF is tolerated


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        (without("a=fingerprint"), "fingerprint"),
        (without("a=setup"), "a=setup"),
        (without("a=ice-pwd"), "ice-pwd"),
        (without("m=video"), "exactly one video"),
        (VALID + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "exactly one video"),
        (VALID + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "at most one audio"),
        (VALID + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "kind"),
        (VALID.replace("m=video 9 UDP/TLS/RTP/SAVPF", "m=video 9 RTP/AVP"), "transport"),
        (VALID + "m=video\r\n", "malformed"),
        ("x" + VALID, "v=0"),
        (VALID + "a=x:" + "y" * 5000 + "\r\n", "longer than"),
        (VALID + "a=x\r\n" * MAX_LINES, "lines"),
    ],
)
def test_bad_offers_are_refused_with_a_reason(offer: str, reason: str) -> None:
    problem = check_offer(offer)
    assert problem is not None and reason in problem
    assert "\n" not in problem


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_never_raises_on_any_text(text: str) -> None:
    result = check_offer(text)
    assert result is None or isinstance(result, str)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=25), max_size=6), st.data())
def test_mutated_offers_never_raise(drops: list[int], data: st.DataObject) -> None:
    lines = VALID.split("\r\n")
    for i in sorted(set(drops), reverse=True):
        if i < len(lines):
            del lines[i]
    junk = data.draw(st.text(max_size=40))
    lines.insert(data.draw(st.integers(0, len(lines))), junk)
    result = check_offer("\r\n".join(lines))
    assert result is None or isinstance(result, str)


CHROMIUM = sorted((Path(__file__).parents[1] / "integration" / "sdp").glob("chromium*.sdp"))
AB32 = ":".join(["AB"] * 32)
CANDIDATE = "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"
LINE_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def replaced(prefix: str, line: str) -> str:
    return "\r\n".join(line if x.startswith(prefix) else x for x in VALID.split("\r\n"))


def video_direction(attribute: str) -> str:
    session_and_audio, video = VALID.split("m=video")
    return session_and_audio + "m=video" + video.replace("a=recvonly", attribute)


@pytest.mark.parametrize("path", CHROMIUM, ids=lambda p: p.stem)
def test_real_chromium_offers_pass(path: Path) -> None:
    assert CHROMIUM, "captured offers missing"
    assert check_offer(path.read_text()) is None


def test_bare_cr_line_ends_are_read_as_aiortc_reads_them() -> None:
    assert check_offer(VALID.replace("\r\n", "\r")) is None


@pytest.mark.parametrize("brk", LINE_BREAKS)
def test_m_lines_hidden_behind_other_line_breaks_are_refused(brk: str) -> None:
    """str.splitlines (aiortc) breaks at these too: a reader that split only at CRLF/LF
    would see one line where aiortc sees another m-section."""
    hidden = VALID + "a=x" + brk + "m=video 9 UDP/TLS/RTP/SAVPF 96" + brk + "a=recvonly\r\n"
    problem = check_offer(hidden)
    assert problem is not None and "control character" in problem
    assert len(grouplines(hidden)[1]) == 3  # what aiortc would have parsed


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        (replaced("a=fingerprint", "a=fingerprint:sha-999 " + AB32), "no fingerprint"),
        (replaced("a=fingerprint", "a=fingerprint:sha-256 " + AB32.replace("A", "Z")), "sha-256"),
        (replaced("a=fingerprint", "a=fingerprint:sha-256 " + AB32[3:]), "malformed sha-256"),
        (replaced("a=fingerprint", "a=fingerprint:sha-384 " + AB32), "malformed sha-384"),
        (replaced("a=fingerprint", "a=fingerprint:sha-256"), "malformed a=fingerprint"),
        (replaced("a=ice-ufrag", "a=ice-ufrag:ab"), "ice-ufrag"),
        (replaced("a=ice-ufrag", "a=ice-ufrag:ab:cd"), "ice-ufrag"),
        (replaced("a=ice-pwd", "a=ice-pwd:tooshort"), "ice-pwd"),
        (replaced("a=ice-pwd", "a=ice-pwd:" + "p" * 300), "ice-pwd"),
        (replaced("a=setup", "a=setup:holdconn"), "a=setup"),
        (video_direction("a=sendonly"), "recvonly or sendrecv"),
        (video_direction("a=inactive"), "recvonly or sendrecv"),
        (video_direction(""), "recvonly or sendrecv"),
        (VALID + CANDIDATE * (MAX_CANDIDATES + 1), "candidates"),
        (VALID.replace("SAVPF 96 97", "SAVPF " + " ".join(["96"] * 200)), "payload types"),
        (VALID.replace("a=mid:1", "a=mid:1\x00"), "U+0000"),
    ],
    ids=lambda value: "offer" if len(value) > 40 else value,  # named by the reason
)  # fmt: skip
def test_offers_that_cannot_work_or_cost_too_much_are_refused(offer: str, reason: str) -> None:
    problem = check_offer(offer)
    assert problem is not None and reason in problem, problem


def test_an_unknown_extra_fingerprint_is_tolerated() -> None:
    # Only the hashes aiortc checks matter; a sha-1 beside a good sha-256 is harmless.
    sha1 = "a=fingerprint:sha-1 " + ":".join(["AB"] * 20)
    offer = VALID.replace("a=setup:actpass", sha1 + "\r\na=setup:actpass", 1)
    assert check_offer(offer) is None


EXTRA_LINES = [
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "m=audio 9 UDP/TLS/RTP/SAVPF 0",
    "a=recvonly",
    "a=x",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["\r\n", "\n", "\r", *LINE_BREAKS]), min_size=1, max_size=30),
    st.lists(st.sampled_from(EXTRA_LINES), max_size=6),
)
def test_what_passes_is_what_aiortc_parses(breaks: list[str], extra: list[str]) -> None:
    """Whatever line breaks join the lines, an offer the guard passes is one aiortc
    reads as one video m-section, at most one audio, within the line limit."""
    lines = VALID.split("\r\n") + extra
    text = lines[0]
    for i, line in enumerate(lines[1:]):
        text += breaks[i % len(breaks)] + line
    if check_offer(text) is None:
        _, media = grouplines(text)
        kinds = [m[0].split()[0] for m in media]
        assert kinds.count("m=video") == 1 and kinds.count("m=audio") <= 1
        assert len(text.splitlines()) <= MAX_LINES


def test_trickle_fragments_are_bounded_per_session() -> None:
    candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 {} typ host\r\n"
    frag = "a=mid:0\r\n" + "".join(candidate.format(5000 + i) for i in range(10))
    assert check_trickle(frag) is None
    assert check_trickle(frag, known=MAX_CANDIDATES - 10) is None
    problem = check_trickle(frag, known=MAX_CANDIDATES - 9)
    assert problem is not None and str(MAX_CANDIDATES) in problem
    assert check_trickle("a=mid:0\r\na=end-of-candidates\r\n", known=MAX_CANDIDATES) is None
    assert check_trickle("a=x\r\n" * (MAX_LINES + 1)) is not None
    assert check_trickle("a=candidate:\x0b1 1 udp 1 127.0.0.1 9 typ host") is not None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000), st.integers(0, 100))
def test_trickle_check_never_raises(text: str, known: int) -> None:
    result = check_trickle(text, known)
    assert result is None or isinstance(result, str)
