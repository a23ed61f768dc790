"""`broadcaster serve` and `broadcaster check-config`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .config import DEFAULT_CONFIG_NAME, Config, ConfigError, load_config

logger = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0
FORCE_AFTER = 0.5  # seconds between two signals for the second to force exit
EXIT_CONFIG = 2
EXIT_CAPTURE = 3


def _default_config_path() -> Path | None:
    path = Path(DEFAULT_CONFIG_NAME)
    return path if path.is_file() else None


def _load(path: str | None) -> Config:
    return load_config(Path(path) if path else _default_config_path())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="broadcaster", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="go live")
    serve.add_argument(
        "--source",
        default="test",
        help="test | camera[:INDEX] | screen[:INDEX] | file:PATH (default: test pattern)",
    )
    serve.add_argument(
        "--audio",
        help="auto | none | tone | file | mic | mic:FORMAT:DEVICE (overrides audio.source; "
        "auto: a beep for the test pattern, the file's sound, the camera's microphone)",
    )
    serve.add_argument(
        "--config", help=f"config file (default: ./{DEFAULT_CONFIG_NAME} if present)"
    )
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="HTTP port (overrides server.port; 0 = any)")
    serve.add_argument("--quiet", action="store_true", help="no live status line")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", nargs="?", help=f"default: ./{DEFAULT_CONFIG_NAME}")
    sign = sub.add_parser("sign-link", help="print a signed, expiring view link")
    sign.add_argument(
        "--config", help=f"config file with auth.link_secret (default: ./{DEFAULT_CONFIG_NAME})"
    )
    sign.add_argument("--ttl", type=int, help="seconds the link stays valid (auth.link_ttl)")
    sign.add_argument("--base", help="page URL to sign for (default: from server.host/port)")
    return p


def _sign_link(args: argparse.Namespace) -> int:
    import time

    from .server.auth import sign_view_token

    try:
        config = _load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"config error: {exc}\n")
        return EXIT_CONFIG
    if not config.auth.link_secret:
        sys.stderr.write("config error: auth.link_secret: required to sign links\n")
        return EXIT_CONFIG
    ttl = args.ttl if args.ttl is not None else config.auth.link_ttl
    if ttl <= 0:
        sys.stderr.write("error: --ttl must be positive\n")
        return EXIT_CONFIG
    base = args.base or f"http://{config.server.host}:{config.server.port}/"
    token = sign_view_token(config.auth.link_secret, int(time.time()) + ttl)
    print(f"{base}{'&' if '?' in base else '?'}token={token}")
    return 0


def _status_line(service: object) -> str:
    from .server.service import Service

    assert isinstance(service, Service) and service.broadcast is not None
    b = service.broadcast
    parts = []
    for i, rung in enumerate(b.ladder):
        if b.stats is not None and i < len(b.stats.fps):
            parts.append(f"{rung.name} {b.stats.fps[i]:4.1f}fps {b.stats.kbps[i]:6.0f}k")
        else:
            parts.append(f"{rung.name} --")
    state = "LIVE" if b.healthy else "starting"
    return f"[{state}] {' | '.join(parts)} | viewers {service.viewers}"


async def _serve(config: Config, source: str, quiet: bool) -> int:
    from .server.service import Service

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal: float | None = None

    def on_signal() -> None:
        nonlocal first_signal
        now = loop.time()
        if first_signal is None:
            first_signal = now
            stop.set()
        elif now - first_signal > FORCE_AFTER:
            # A second Ctrl-C while shutdown drags on: the user means it. (One signal
            # delivered twice, e.g. to us and to our process group, does not count.)
            sys.stderr.write("\nforced exit\n")
            os._exit(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    service = Service(config, source)
    try:
        await service.start()
    except OSError as exc:
        sys.stderr.write(
            f"error: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}\n"
        )
        await service.close()
        return 1
    print(f"broadcaster is live: open {service.url}  (WHEP: {service.url}whep)", flush=True)
    failed = asyncio.ensure_future(service.failed.wait())
    stopped = asyncio.ensure_future(stop.wait())
    tty = sys.stdout.isatty() and not quiet
    try:
        while not (failed.done() or stopped.done()):
            await asyncio.wait({failed, stopped}, timeout=STATUS_INTERVAL)
            if tty:
                sys.stdout.write("\r\x1b[K" + _status_line(service))
                sys.stdout.flush()
    finally:
        failed.cancel()
        stopped.cancel()
        if tty:
            sys.stdout.write("\n")
        error = service.broadcast.error if service.broadcast else None
        await service.close()
    if error and not stop.is_set():
        sys.stderr.write(f"error: {error}\n")
        return EXIT_CAPTURE
    print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sign-link":
        return _sign_link(args)
    if args.command == "check-config":
        try:
            config = _load(args.path)
        except ConfigError as exc:
            sys.stderr.write(f"config error: {exc}\n")
            return EXIT_CONFIG
        rungs = ", ".join(
            f"{r.name} {r.width}x{r.height}@{r.fps} {r.bitrate}k" for r in config.ladder
        )
        audio = config.audio
        sound = (
            "no audio"
            if audio.source == "none"
            else (f"audio {audio.source} opus {audio.bitrate}k {audio.channels}ch")
        )
        print(f"config ok: {config.video.codec}, {sound}, ladder: {rungs}")
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = _load(args.config).with_server(args.host, args.port).with_audio(args.audio)
    except ConfigError as exc:
        sys.stderr.write(f"config error: {exc}\n")
        return EXIT_CONFIG
    return asyncio.run(_serve(config, args.source, args.quiet))


if __name__ == "__main__":
    sys.exit(main())
