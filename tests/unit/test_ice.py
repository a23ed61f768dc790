"""ICE settings: WHEP Link headers, announced addresses, which addresses to gather on."""

from __future__ import annotations

from broadcaster.config import parse_config
from broadcaster.server.ice import announce, host_addresses, ice_link_headers, rtc_configuration

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
    assert ice_link_headers(config) == [
        '<stun:stun.example.org:3478>; rel="ice-server"',
        '<turn:turn.example.org?transport=udp>; rel="ice-server"; username="u"; '
        'credential="p\\"w"; credential-type="password"',
    ]
    servers = rtc_configuration(config).iceServers
    assert servers is not None and servers[1].username == "u"


def test_no_servers_means_no_public_stun() -> None:
    # aiortc would fall back to a public STUN server if handed None.
    assert rtc_configuration(parse_config({})).iceServers == []


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
