"""config.toml -> frozen dataclasses, validated.

Every problem is reported as a ConfigError whose message names the offending key
(``ladder[1].width: must be even, got 641``), so a bad file stops startup with one line.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CODECS = ("vp8", "h264")
DEFAULT_CONFIG_NAME = "config.toml"


class ConfigError(ValueError):
    """Invalid configuration; str() is one line naming the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Fan-out worker processes. 0: viewers are served by the server process itself.
    # AUTO_WORKERS ("auto" in the file): one per core the capture leaves free, but none
    # when that is a single core (one worker would only add a hop).
    workers: int = -1
    # Send a frame's packets to one viewer in one syscall (UDP GSO) where the kernel can.
    gso: bool = True

    def worker_count(self, cores: int | None) -> int:
        if self.workers != AUTO_WORKERS:
            return self.workers
        free = (cores or 1) - 1  # the capture process takes about a core
        return free if free >= 2 else 0


AUTO_WORKERS = -1
MAX_WORKERS = 64


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None
    # TURN REST (draft-uberti-behave-turn-rest): with a shared secret, every viewer gets
    # its own credentials that expire after `ttl` seconds; `username` is then the user
    # part after the expiry ("<expiry>:<username>").
    secret: str | None = None
    ttl: int = 300


@dataclass(frozen=True)
class IceConfig:
    # STUN/TURN servers handed to aiortc and announced to viewers in WHEP Link headers.
    servers: tuple[IceServer, ...] = ()
    # Addresses to gather host candidates on. Empty: every interface, plus 127.0.0.1
    # when the server listens on loopback (aioice leaves loopback out on its own).
    addresses: tuple[str, ...] = ()
    # UDP port range for media sockets; 0/0 lets the kernel choose.
    port_min: int = 0
    port_max: int = 0
    # Public IP to put in host candidates instead of the bound one (NAT, containers).
    announce: str = ""


@dataclass(frozen=True)
class VideoConfig:
    codec: str = "vp8"
    # Seconds between periodic keyframes on every rung (new viewers and switches also ask).
    keyframe_interval: float = 2.0
    # Keyframe requests per rung are throttled to one per this many milliseconds.
    keyframe_min_interval_ms: int = 500


AUDIO_SOURCE_FORMS = "auto | none | tone | file | mic | mic:FORMAT:DEVICE"


@dataclass(frozen=True)
class AudioConfig:
    # auto: a beep on every full second for the test pattern (lined up with its flash),
    # the file's own audio track for a file, the default microphone for a camera, none
    # for a screen. mic:FORMAT:DEVICE picks an FFmpeg input, e.g. mic:alsa:hw:1.
    source: str = "auto"
    bitrate: int = 64  # kbit/s, Opus
    channels: int = 1


@dataclass(frozen=True)
class AbrConfig:
    """Tuning of the adaptive-bitrate policy (broadcaster/server/abr.py); seconds unless named."""

    # Wire bits per media bit (RTP/SRTP/UDP/IP headers, retransmissions).
    overhead: float = 1.10
    # The receiver's estimate starts low; ignore REMB this long after joining.
    startup_grace: float = 2.0
    # A rung fits while REMB >= this share of its need: browsers' delay-based estimate sits
    # near, often below, what they receive on a free link, and ramps up only slowly.
    remb_headroom: float = 0.65
    # A rung's need must be unmet this long before moving down, when loss backs the
    # estimate up; a REMB dip with a clean link (a keyframe, a CPU hiccup on either side)
    # must last down_hold_quiet.
    down_hold: float = 0.75
    down_hold_quiet: float = 5.0
    # Heavy loss must last this long (several receiver reports) to count on its own.
    loss_hold: float = 1.0
    # After a down-switch, only a much worse reading moves down again this soon.
    down_settle: float = 1.5
    # Receiver-report loss above this counts against the capacity estimate.
    loss_down: float = 0.10
    # Loss must be below this to try going up.
    loss_clean: float = 0.03
    # RTT this far above the lowest seen (a queue building) steps down one rung.
    rtt_rise_ms: float = 300.0
    # No up-switch this soon after a down-switch (mediasoup: 10 s), or after any switch.
    up_after_down: float = 8.0
    up_stable: float = 2.0
    # Capacity probe: extra traffic ramps the total up by this factor per second (from the
    # rung's need towards the top rung's); a rung is proven once covered this long.
    probe_growth: float = 1.6
    probe_hold: float = 0.5
    # A probe fails on loss above this, RTT this far above its lowest, or REMB falling
    # below this share of its peak.
    probe_loss: float = 0.05
    probe_rtt_rise_ms: float = 60.0
    probe_remb_drop: float = 0.85
    # After a failed probe wait this long, doubling per failure up to the max.
    probe_backoff: float = 3.0
    probe_backoff_max: float = 8.0


@dataclass(frozen=True)
class LimitsConfig:
    """What one client, or all of them together, may take; 0 means unlimited."""

    # WHEP sessions at once; the next offer gets 503 with Retry-After.
    max_viewers: int = 500
    retry_after: int = 10  # seconds, in 503/429 answers
    # WHEP offers per client IP per minute (bursts up to the same number); 429 above it.
    offers_per_minute: int = 60
    # WebSocket (/ws): open sockets, largest text frame, messages per second (with a burst).
    ws_max_connections: int = 1000
    ws_max_message_bytes: int = 8192
    ws_messages_per_second: float = 20.0
    ws_message_burst: int = 40


@dataclass(frozen=True)
class AuthConfig:
    """Off by default. Tokens are compared in constant time; none is ever logged."""

    # Bearer tokens that may watch (WHEP POST and /ws). Empty and no link_secret: open.
    view_tokens: tuple[str, ...] = ()
    # Bearer tokens for the control API (/api/viewers, /metrics). Empty: open.
    control_tokens: tuple[str, ...] = ()
    # Bearer tokens that may publish (WHIP, once it exists).
    publish_tokens: tuple[str, ...] = ()
    # HMAC key for signed, expiring view links (`broadcaster sign-link`).
    link_secret: str = ""
    link_ttl: int = 3600  # default lifetime of a signed link, seconds

    @property
    def view_required(self) -> bool:
        return bool(self.view_tokens or self.link_secret)


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    fps: int
    bitrate: int  # kbit/s

    @property
    def bitrate_bps(self) -> int:
        return self.bitrate * 1000


DEFAULT_LADDER = (
    Rung("720p", 1280, 720, 30, 2500),
    Rung("360p", 640, 360, 30, 800),
    Rung("180p", 320, 180, 30, 250),
)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    ice: IceConfig = field(default_factory=IceConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    abr: AbrConfig = field(default_factory=AbrConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    def rung(self, name: str) -> Rung:
        for rung in self.ladder:
            if rung.name == name:
                return rung
        raise KeyError(name)

    def with_server(self, host: str | None = None, port: int | None = None) -> Config:
        """A copy with CLI overrides applied (validated like the file)."""
        server = replace(
            self.server,
            host=self.server.host if host is None else host,
            port=self.server.port if port is None else port,
        )
        _check_server(server)
        return replace(self, server=server)

    def with_audio(self, source: str | None) -> Config:
        """A copy with the CLI's --audio applied (validated like the file)."""
        if source is None:
            return self
        audio = replace(self.audio, source=source)
        _check_audio(audio, "--audio")
        return replace(self, audio=audio)


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file; None means built-in defaults."""
    if path is None:
        return parse_config({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    return parse_config(data)


def parse_config(data: dict[str, Any]) -> Config:
    _check_keys("", data, ("server", "ice", "video", "audio", "ladder", "abr", "limits", "auth"))
    server = _parse_server(data.get("server", {}))
    _check_server(server)
    ice = _parse_ice(data.get("ice", {}))
    video = _section(VideoConfig, "video", data.get("video", {}))
    _check_video(video)
    audio = _section(AudioConfig, "audio", data.get("audio", {}))
    _check_audio(audio, "audio.source")
    ladder = _parse_ladder(data["ladder"]) if "ladder" in data else DEFAULT_LADDER
    abr = _section(AbrConfig, "abr", data.get("abr", {}))
    _check_abr(abr)
    limits = _section(LimitsConfig, "limits", data.get("limits", {}))
    _check_limits(limits)
    auth = _parse_auth(data.get("auth", {}))
    return Config(
        server=server,
        ice=ice,
        video=video,
        audio=audio,
        ladder=ladder,
        abr=abr,
        limits=limits,
        auth=auth,
    )


# ---------------------------------------------------------------- helpers


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
}


def _check_keys(prefix: str, table: Any, allowed: tuple[str, ...]) -> None:
    where = prefix.rstrip(".") or "config"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}: unknown key (expected one of {', '.join(allowed)})")


def _value(key: str, value: Any, kind: str) -> Any:
    # bool is an int in Python; a config `port = true` is still a type error.
    if isinstance(value, bool) or not isinstance(value, _TYPES[kind]):
        raise ConfigError(f"{key}: must be {kind}, got {type(value).__name__} {value!r}")
    return float(value) if kind == "float" else value  # type: ignore[arg-type]


def _section(cls: Any, name: str, table: Any) -> Any:
    names = tuple(f.name for f in fields(cls))
    _check_keys(f"{name}.", table, names)
    kinds = {f.name: str(f.type) for f in fields(cls)}
    values = {k: _value(f"{name}.{k}", v, kinds[k]) for k, v in table.items()}
    return cls(**values)


def _parse_server(table: Any) -> ServerConfig:
    _check_keys("server.", table, ("host", "port", "workers", "gso"))
    rest = {k: v for k, v in table.items() if k not in ("workers", "gso")}
    gso = table.get("gso", True)
    if not isinstance(gso, bool):
        raise ConfigError(f"server.gso: must be true or false, got {gso!r}")
    server: ServerConfig = _section(ServerConfig, "server", rest)
    workers = table.get("workers", "auto")
    if workers == "auto":
        workers = AUTO_WORKERS
    elif isinstance(workers, bool) or not isinstance(workers, int):
        raise ConfigError(f'server.workers: must be "auto" or a number, got {workers!r}')
    elif not 0 <= workers <= MAX_WORKERS:
        raise ConfigError(f'server.workers: must be 0-{MAX_WORKERS} or "auto", got {workers}')
    return replace(server, workers=workers, gso=gso)


def _check_server(s: ServerConfig) -> None:
    if not s.host:
        raise ConfigError("server.host: must not be empty")
    if not 0 <= s.port < 65536:
        raise ConfigError(f"server.port: must be 0-65535 (0 = any free port), got {s.port}")


def _check_video(v: VideoConfig) -> None:
    if v.codec not in CODECS:
        raise ConfigError(f"video.codec: must be one of {', '.join(CODECS)}, got {v.codec!r}")
    if not 0.1 <= v.keyframe_interval <= 60:
        raise ConfigError(
            f"video.keyframe_interval: must be 0.1-60 seconds, got {v.keyframe_interval}"
        )
    if not 0 <= v.keyframe_min_interval_ms <= 10_000:
        raise ConfigError(
            f"video.keyframe_min_interval_ms: must be 0-10000, got {v.keyframe_min_interval_ms}"
        )


def _check_audio(a: AudioConfig, source_key: str) -> None:
    kind, _, rest = a.source.partition(":")
    fmt, _, device = rest.partition(":")
    simple = kind in ("auto", "none", "tone", "file", "mic") and not rest
    if not (simple or (kind == "mic" and fmt and device)):
        raise ConfigError(f"{source_key}: must be {AUDIO_SOURCE_FORMS}, got {a.source!r}")
    if not 6 <= a.bitrate <= 510:
        raise ConfigError(f"audio.bitrate: must be 6-510 kbit/s (Opus), got {a.bitrate}")
    if a.channels not in (1, 2):
        raise ConfigError(f"audio.channels: must be 1 or 2, got {a.channels}")


_FRACTIONS = ("loss_down", "loss_clean", "probe_loss", "probe_remb_drop", "remb_headroom")


def _check_abr(a: AbrConfig) -> None:
    for f in fields(a):
        value = getattr(a, f.name)
        if f.name in _FRACTIONS:
            if not 0 < value < 1:
                raise ConfigError(f"abr.{f.name}: must be between 0 and 1, got {value}")
        elif value <= 0 or value > 3600:
            raise ConfigError(f"abr.{f.name}: must be positive (at most 3600), got {value}")
    if a.probe_growth <= 1:
        raise ConfigError(
            f"abr.probe_growth: must be > 1 (a factor per second), got {a.probe_growth}"
        )
    if a.overhead < 1:
        raise ConfigError(f"abr.overhead: must be >= 1 (wire bits per media bit), got {a.overhead}")
    if a.loss_clean > a.loss_down:
        raise ConfigError("abr.loss_clean: must not exceed abr.loss_down")
    if a.probe_backoff > a.probe_backoff_max:
        raise ConfigError("abr.probe_backoff: must not exceed abr.probe_backoff_max")


_LIMIT_RANGES = {
    "max_viewers": (0, 100_000),
    "retry_after": (1, 3600),
    "offers_per_minute": (0, 100_000),
    "ws_max_connections": (0, 100_000),
    "ws_max_message_bytes": (256, 1024 * 1024),
    "ws_messages_per_second": (0.1, 10_000),
    "ws_message_burst": (1, 100_000),
}


def _check_limits(limits: LimitsConfig) -> None:
    for name, (low, high) in _LIMIT_RANGES.items():
        value = getattr(limits, name)
        if not low <= value <= high:
            raise ConfigError(f"limits.{name}: must be {low}-{high}, got {value}")


# A bearer token is a password: short ones can be guessed over the network.
MIN_TOKEN_CHARS = 16
MIN_SECRET_CHARS = 32


def _parse_auth(table: Any) -> AuthConfig:
    names = tuple(f.name for f in fields(AuthConfig))
    _check_keys("auth.", table, names)
    lists = {}
    for name in ("view_tokens", "control_tokens", "publish_tokens"):
        tokens = _str_list(f"auth.{name}", table.get(name, []))
        for i, token in enumerate(tokens):
            # The message names the position, never the token itself.
            if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
                raise ConfigError(
                    f"auth.{name}[{i}]: must be at least {MIN_TOKEN_CHARS} characters "
                    "without spaces"
                )
        lists[name] = tokens
    secret = _value("auth.link_secret", table.get("link_secret", ""), "str")
    if secret and len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"auth.link_secret: must be at least {MIN_SECRET_CHARS} characters")
    ttl = _value("auth.link_ttl", table.get("link_ttl", 3600), "int")
    if not 1 <= ttl <= 366 * 86400:
        raise ConfigError(f"auth.link_ttl: must be 1-{366 * 86400} seconds, got {ttl}")
    return AuthConfig(link_secret=secret, link_ttl=ttl, **lists)


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: must be a string or a list of strings")
    return tuple(value)


def _parse_ice(table: Any) -> IceConfig:
    _check_keys("ice.", table, ("servers", "addresses", "port_min", "port_max", "announce"))
    servers = []
    raw_servers = table.get("servers", [])
    if not isinstance(raw_servers, list):
        raise ConfigError("ice.servers: must be an array of tables ([[ice.servers]])")
    for i, raw in enumerate(raw_servers):
        key = f"ice.servers[{i}]"
        _check_keys(f"{key}.", raw, ("urls", "username", "credential", "secret", "ttl"))
        if "urls" not in raw:
            raise ConfigError(f"{key}.urls: required")
        urls = _str_list(f"{key}.urls", raw["urls"])
        for url in urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"{key}.urls: {url!r} must start with stun:, turn: or turns:")
        servers.append(_parse_ice_server(key, raw, urls))
    addresses = _str_list("ice.addresses", table.get("addresses", []))
    for addr in addresses:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"ice.addresses: {addr!r} is not an IP address") from None
    port_min = _value("ice.port_min", table.get("port_min", 0), "int")
    port_max = _value("ice.port_max", table.get("port_max", 0), "int")
    if (port_min, port_max) != (0, 0):
        if not 1024 <= port_min <= port_max <= 65535:
            raise ConfigError(
                f"ice.port_min/ice.port_max: need 1024 <= port_min <= port_max <= 65535, "
                f"got {port_min}-{port_max}"
            )
    announce = _value("ice.announce", table.get("announce", ""), "str")
    if announce:
        try:
            ipaddress.ip_address(announce)
        except ValueError:
            raise ConfigError(f"ice.announce: {announce!r} is not an IP address") from None
    return IceConfig(
        servers=tuple(servers),
        addresses=addresses,
        port_min=port_min,
        port_max=port_max,
        announce=announce,
    )


def _parse_ice_server(key: str, raw: dict[str, Any], urls: tuple[str, ...]) -> IceServer:
    username = raw.get("username")
    credential = raw.get("credential")
    secret = raw.get("secret")
    for k, v in (("username", username), ("credential", credential), ("secret", secret)):
        if v is not None:
            _value(f"{key}.{k}", v, "str")
    ttl = _value(f"{key}.ttl", raw.get("ttl", 300), "int")
    if not 10 <= ttl <= 86400:
        raise ConfigError(f"{key}.ttl: must be 10-86400 seconds, got {ttl}")
    if secret is not None:
        if credential is not None:
            raise ConfigError(f"{key}: give either credential (static) or secret (TURN REST)")
        if not any(u.startswith("turn") for u in urls):
            raise ConfigError(f"{key}.secret: TURN REST credentials need a turn: or turns: url")
        if not secret:
            raise ConfigError(f"{key}.secret: must not be empty")
    elif any(u.startswith("turn") for u in urls) and (username is None or credential is None):
        raise ConfigError(
            f"{key}: a TURN server needs username and credential, or a secret (TURN REST)"
        )
    return IceServer(urls=urls, username=username, credential=credential, secret=secret, ttl=ttl)


_RUNG_FIELDS = ("name", "width", "height", "fps", "bitrate")


def _parse_rung(i: int, raw: Any) -> Rung:
    key = f"ladder[{i}]"
    _check_keys(f"{key}.", raw, _RUNG_FIELDS)
    for name in _RUNG_FIELDS:
        if name not in raw:
            raise ConfigError(f"{key}.{name}: required")
    name = _value(f"{key}.name", raw["name"], "str")
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name == "auto":
        raise ConfigError(
            f"{key}.name: must be letters, digits, '-' or '_' and not 'auto', got {name!r}"
        )
    ints = {k: _value(f"{key}.{k}", raw[k], "int") for k in ("width", "height", "fps", "bitrate")}
    for k in ("width", "height"):
        if not 16 <= ints[k] <= 4096:
            raise ConfigError(f"{key}.{k}: must be 16-4096, got {ints[k]}")
        if ints[k] % 2:
            raise ConfigError(f"{key}.{k}: must be even (4:2:0 video), got {ints[k]}")
    if not 1 <= ints["fps"] <= 120:
        raise ConfigError(f"{key}.fps: must be 1-120, got {ints['fps']}")
    if ints["bitrate"] <= 0:
        raise ConfigError(
            f"{key}.bitrate: must be a positive number of kbit/s, got {ints['bitrate']}"
        )
    if ints["bitrate"] > 100_000:
        raise ConfigError(f"{key}.bitrate: at most 100000 kbit/s, got {ints['bitrate']}")
    return Rung(name=name, **ints)


def _parse_ladder(raw: Any) -> tuple[Rung, ...]:
    if not isinstance(raw, list):
        raise ConfigError("ladder: must be an array of tables ([[ladder]])")
    if not raw:
        raise ConfigError("ladder: must have at least one rung")
    if len(raw) > 8:
        raise ConfigError(f"ladder: at most 8 rungs, got {len(raw)}")
    rungs = tuple(_parse_rung(i, r) for i, r in enumerate(raw))
    seen: dict[str, int] = {}
    for i, rung in enumerate(rungs):
        if rung.name in seen:
            raise ConfigError(
                f"ladder[{i}].name: duplicate rung name {rung.name!r} "
                f"(also ladder[{seen[rung.name]}])"
            )
        seen[rung.name] = i
    for i in range(1, len(rungs)):
        hi, lo = rungs[i - 1], rungs[i]
        if (lo.width, lo.height) == (hi.width, hi.height) and lo.bitrate == hi.bitrate:
            raise ConfigError(f"ladder[{i}]: duplicate of ladder[{i - 1}] (same size and bitrate)")
        if lo.width > hi.width or lo.height > hi.height or lo.bitrate >= hi.bitrate:
            raise ConfigError(
                f"ladder[{i}]: rungs must be sorted from best to worst "
                f"(width, height and bitrate not above ladder[{i - 1}], bitrate strictly lower)"
            )
        if lo.fps > hi.fps:
            raise ConfigError(f"ladder[{i}].fps: must not exceed ladder[0].fps ({hi.fps})")
    top_fps = rungs[0].fps
    for i, rung in enumerate(rungs):
        if top_fps % rung.fps:
            raise ConfigError(
                f"ladder[{i}].fps: must divide the top rung's fps ({top_fps}), got {rung.fps}"
            )
    return rungs
