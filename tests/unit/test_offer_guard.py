"""The offer guard: what a WHEP viewer's offer must look like before aiortc parses it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.server.offer_guard import MAX_LINES, check_offer

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
