"""Config validation: every bad case names its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from broadcaster.config import DEFAULT_LADDER, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

GOOD_LADDER: list[dict[str, Any]] = [
    {"name": "720p", "width": 1280, "height": 720, "fps": 30, "bitrate": 2500},
    {"name": "360p", "width": 640, "height": 360, "fps": 30, "bitrate": 800},
    {"name": "180p", "width": 320, "height": 180, "fps": 15, "bitrate": 250},
]


def ladder_with(index: int, **changes: Any) -> dict[str, Any]:
    ladder = copy.deepcopy(GOOD_LADDER)
    ladder[index].update(changes)
    return {"ladder": ladder}


def test_shipped_config_toml_is_valid_and_matches_defaults() -> None:
    config = load_config(ROOT / "config.toml")
    assert config.ladder == DEFAULT_LADDER
    assert config.video.codec == "vp8"
    assert config.server.port == 8080


def test_defaults_without_file() -> None:
    config = load_config(None)
    assert [r.name for r in config.ladder] == ["720p", "360p", "180p"]
    assert config.ice.servers == ()


def test_full_valid_config() -> None:
    config = parse_config(
        {
            "server": {"host": "0.0.0.0", "port": 9000},
            "ice": {
                "servers": [
                    {"urls": "stun:stun.example.org:3478"},
                    {"urls": ["turn:turn.example.org"], "username": "u", "credential": "p"},
                ],
                "addresses": ["10.0.0.5"],
                "port_min": 40000,
                "port_max": 40100,
            },
            "video": {"codec": "h264", "keyframe_interval": 1, "keyframe_min_interval_ms": 250},
            "ladder": GOOD_LADDER,
        }
    )
    assert config.server.port == 9000
    assert config.ice.servers[0].urls == ("stun:stun.example.org:3478",)
    assert config.ice.servers[1].username == "u"
    assert config.video.keyframe_interval == 1.0
    assert config.ladder[2].fps == 15
    assert config.rung("360p").bitrate_bps == 800_000


BAD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top key", {"sever": {}}, "sever: unknown key"),
    ("audio source", {"audio": {"source": "speaker"}}, "audio.source: must be auto | none"),
    ("mic without device", {"audio": {"source": "mic:alsa"}}, "audio.source: must be"),
    ("audio bitrate", {"audio": {"bitrate": 600}}, "audio.bitrate: must be 6-510"),
    ("audio channels", {"audio": {"channels": 6}}, "audio.channels: must be 1 or 2"),
    ("audio unknown key", {"audio": {"volume": 3}}, "audio.volume: unknown key"),
    ("unknown server key", {"server": {"prot": 1}}, "server.prot: unknown key"),
    ("bad port type", {"server": {"port": "80"}}, "server.port: must be int"),
    ("bool is not int", {"server": {"port": True}}, "server.port: must be int"),
    ("port range", {"server": {"port": 70000}}, "server.port: must be 0-65535"),
    ("section not table", {"server": 5}, "server: must be a table"),
    ("codec", {"video": {"codec": "av1"}}, "video.codec: must be one of vp8, h264"),
    ("keyframe interval", {"video": {"keyframe_interval": 0}}, "video.keyframe_interval"),
    ("empty ladder", {"ladder": []}, "ladder: must have at least one rung"),
    ("ladder not array", {"ladder": {"name": "x"}}, "ladder: must be an array"),
    ("odd width", ladder_with(1, width=641), "ladder[1].width: must be even"),
    ("odd height", ladder_with(0, height=721), "ladder[0].height: must be even"),
    ("zero bitrate", ladder_with(2, bitrate=0), "ladder[2].bitrate: must be a positive"),
    ("negative bitrate", ladder_with(1, bitrate=-5), "ladder[1].bitrate: must be a positive"),
    ("bitrate type", ladder_with(1, bitrate="800k"), "ladder[1].bitrate: must be int"),
    ("float width", ladder_with(0, width=1280.0), "ladder[0].width: must be int"),
    (
        "missing key",
        {"ladder": [{"name": "a", "width": 2, "height": 2, "fps": 1}]},
        "ladder[0].bitrate: required",
    ),
    ("unknown rung key", ladder_with(0, bitrat=1), "ladder[0].bitrat: unknown key"),
    ("duplicate name", ladder_with(1, name="720p"), "ladder[1].name: duplicate rung name"),
    (
        "duplicate rung",
        ladder_with(1, name="x", width=1280, height=720, bitrate=2500),
        "ladder[1]: duplicate of ladder[0]",
    ),
    (
        "unsorted",
        ladder_with(1, width=1920, height=1080, bitrate=5000),
        "ladder[1]: rungs must be sorted",
    ),
    ("bad name", ladder_with(0, name="a b"), "ladder[0].name: must be letters"),
    ("name auto", ladder_with(0, name="auto"), "ladder[0].name"),
    ("fps not dividing", ladder_with(2, fps=7), "ladder[2].fps: must divide"),
    ("ice url", {"ice": {"servers": [{"urls": "http://x"}]}}, "ice.servers[0].urls"),
    (
        "turn creds",
        {"ice": {"servers": [{"urls": "turn:x"}]}},
        "ice.servers[0]: a TURN server needs username and credential",
    ),
    ("ice address", {"ice": {"addresses": ["not-an-ip"]}}, "ice.addresses: 'not-an-ip'"),
    ("announce", {"ice": {"announce": "example.org"}}, "ice.announce: 'example.org'"),
    (
        "port range order",
        {"ice": {"port_min": 50000, "port_max": 40000}},
        "ice.port_min/ice.port_max",
    ),
    (
        "turn rest and static",
        {"ice": {"servers": [{"urls": "turn:x", "secret": "k", "credential": "p"}]}},
        "ice.servers[0]: give either credential (static) or secret",
    ),
    (
        "turn rest on stun",
        {"ice": {"servers": [{"urls": "stun:x", "secret": "k"}]}},
        "ice.servers[0].secret: TURN REST credentials need a turn",
    ),
    ("turn rest ttl", {"ice": {"servers": [{"urls": "turn:x", "secret": "k", "ttl": 1}]}}, "ttl"),
    ("max viewers", {"limits": {"max_viewers": -1}}, "limits.max_viewers: must be 0-100000"),
    ("offer rate type", {"limits": {"offers_per_minute": "60"}}, "limits.offers_per_minute"),
    ("ws msg size", {"limits": {"ws_max_message_bytes": 10}}, "limits.ws_max_message_bytes"),
    ("unknown limit", {"limits": {"max_viewer": 5}}, "limits.max_viewer: unknown key"),
    ("short token", {"auth": {"view_tokens": ["short"]}}, "auth.view_tokens[0]: must be at"),
    (
        "token with space",
        {"auth": {"control_tokens": ["a" * 20, "b" * 10 + " " + "c" * 10]}},
        "auth.control_tokens[1]",
    ),
    ("token type", {"auth": {"publish_tokens": [1]}}, "auth.publish_tokens: must be a string"),
    ("short secret", {"auth": {"link_secret": "abc"}}, "auth.link_secret: must be at least 32"),
    ("link ttl", {"auth": {"link_ttl": 0}}, "auth.link_ttl"),
    ("gso type", {"server": {"gso": "yes"}}, "server.gso: must be true or false"),
    ("workers word", {"server": {"workers": "many"}}, 'server.workers: must be "auto"'),
    ("workers range", {"server": {"workers": 65}}, "server.workers: must be 0-64"),
]


def test_workers_auto_leaves_the_capture_a_core() -> None:
    server = parse_config({}).server
    assert [server.worker_count(c) for c in (1, 2, 3, 8, None)] == [0, 0, 2, 7, 0]
    assert parse_config({"server": {"workers": 3}}).server.worker_count(2) == 3
    assert parse_config({"server": {"gso": False}}).server.gso is False


def test_limits_auth_and_turn_rest_parse() -> None:
    config = parse_config(
        {
            "ice": {"servers": [{"urls": "turn:t", "secret": "k", "ttl": 600, "username": "u"}]},
            "limits": {"max_viewers": 3, "offers_per_minute": 0, "ws_messages_per_second": 5},
            "auth": {"view_tokens": "v" * 16, "link_secret": "s" * 32, "link_ttl": 60},
        }
    )
    assert config.ice.servers[0].secret == "k" and config.ice.servers[0].ttl == 600
    assert config.limits.max_viewers == 3 and config.limits.ws_messages_per_second == 5.0
    assert config.auth.view_tokens == ("v" * 16,) and config.auth.view_required
    assert not parse_config({}).auth.view_required


def test_bad_token_message_never_shows_the_token() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"auth": {"view_tokens": ["secret-but-short"[:10]]}})
    assert "secret-but" not in str(info.value)


@pytest.mark.parametrize(("label", "data", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_config_names_the_key(label: str, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_every_bad_case_has_its_own_message() -> None:
    messages = set()
    for _, data, _ in BAD_CASES:
        with pytest.raises(ConfigError) as info:
            parse_config(data)
        messages.add(str(info.value))
    assert len(messages) == len(BAD_CASES)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cli_overrides_are_validated() -> None:
    config = load_config(None)
    assert config.with_server(port=0).server.port == 0
    with pytest.raises(ConfigError, match="server.port"):
        config.with_server(port=-1)
