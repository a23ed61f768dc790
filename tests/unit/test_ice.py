"""ICE settings: WHEP Link headers, announced addresses, which addresses to gather on."""

from __future__ import annotations

import base64
import hashlib
import hmac

from broadcaster.config import parse_config
from broadcaster.server.ice import (
    announce,
    host_addresses,
    ice_link_headers,
    ice_servers,
    rtc_configuration,
    turn_rest_credentials,
)

SDP = (
    "v=0\r\n"
    "a=candidate:1 1 udp 2130706431 172.17.0.2 40001 typ host\r\n"
    "a=candidate:2 1 udp 1694498815 203.0.113.9 40001 typ srflx raddr 172.17.0.2 rport 40001\r\n"
)


def test_link_headers_for_stun_and_turn() -> None:
    config = parse_config(
        {
            "ice": {
                "servers": [
                    {"urls": ["stun:stun.example.org:3478"]},
                    {
                        "urls": "turn:turn.example.org?transport=udp",
                        "username": "u",
                        "credential": 'p"w',
                    },
                ]
            }
        }
    )
    servers = ice_servers(config, now=1_700_000_000)
    assert ice_link_headers(servers) == [
        '<stun:stun.example.org:3478>; rel="ice-server"',
        '<turn:turn.example.org?transport=udp>; rel="ice-server"; username="u"; '
        'credential="p\\"w"; credential-type="password"',
    ]
    rtc = rtc_configuration(servers).iceServers
    assert rtc is not None and rtc[1].username == "u"


def test_no_servers_means_no_public_stun() -> None:
    # aiortc would fall back to a public STUN server if handed None.
    assert rtc_configuration(ice_servers(parse_config({}), now=0)).iceServers == []


def test_turn_rest_credentials_match_coturn_scheme() -> None:
    # coturn use-auth-secret: password = base64(HMAC-SHA1(secret, "<expiry>:<user>")).
    username, credential = turn_rest_credentials("s3cret", "alice", 1_700_000_300)
    assert username == "1700000300:alice"
    expected = hmac.new(b"s3cret", b"1700000300:alice", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def test_turn_rest_servers_get_fresh_expiring_credentials_per_call() -> None:
    config = parse_config(
        {"ice": {"servers": [{"urls": "turn:turn.example.org", "secret": "k" * 32, "ttl": 300}]}}
    )
    first = ice_servers(config, now=1000.0)[0]
    later = ice_servers(config, now=1060.0)[0]
    assert first.username == "1300:broadcaster" and later.username == "1360:broadcaster"
    assert first.credential != later.credential and first.secret is None
    header = ice_link_headers((first,))[0]
    assert 'username="1300:broadcaster"' in header and first.credential in header
    assert "k" * 32 not in header  # the shared secret itself never leaves the server


def test_announce_rewrites_only_host_candidates() -> None:
    out = announce(SDP, "198.51.100.7")
    assert "198.51.100.7 40001 typ host" in out
    assert "203.0.113.9 40001 typ srflx raddr 172.17.0.2" in out
    assert announce(SDP, "") == SDP


def test_host_addresses() -> None:
    assert host_addresses(parse_config({})) == ["127.0.0.1"]
    assert host_addresses(parse_config({"server": {"host": "0.0.0.0"}})) is None
    explicit = parse_config({"server": {"host": "0.0.0.0"}, "ice": {"addresses": ["10.1.2.3"]}})
    assert host_addresses(explicit) == ["10.1.2.3"]
