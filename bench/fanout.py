"""Fan-out at scale: server CPU per WebRTC viewer, event-loop lag and delivery, three designs.

    python bench/fanout.py [--viewers 10,50,100,200] [--naive-viewers 1,5,10]
                           [--seconds 15] [--settle 5] [--rung 360p] [--full-ladder]

Designs, each one server process on 127.0.0.1 driven by the same receivers:

- ours: ``broadcaster serve``. Its capture subprocess encodes the ladder once; the server
  process fans the encoded frames out (switcher track per viewer, ABR, RTCP hooks, aiortc
  sender). Every viewer is pinned to ``--rung`` through the WHEP layer link.
- stock: bench/stock_server.py, aiortc's stock pre-encoded sender: the same capture
  process (same config, same VP8 bitstream), then per viewer a track whose ``recv()``
  returns the ``av.Packet`` from its own queue, packetized by aiortc's ``RTCRtpSender``.
- naive: bench/naive_server.py, one aiortc VP8 encoder per viewer behind MediaRelay, at the
  rung's bitrate. ~10 % of a core per viewer, so its N list is its own (--naive-viewers).

Ladder: ours and stock run a one-rung ladder (``--rung`` only) unless --full-ladder. The
server's per-viewer work does not depend on rungs nobody watches, but on 2 cores the 720p
and 180p encodes (~60 % of a core) would compete with the fan-out and receivers under test.

For each N (N=0 first, as the idle baseline), N viewers connect (bench/receivers.py, 50
per process at nice 10; they count RTP and do not decode, ~0.2-0.35 % of a core per
viewer), then after ``--settle`` seconds, over ``--seconds``:

- CPU %/viewer = (server CPU % at N - server CPU % at N=0) / N, % of one core, the server
  process alone (user+system time of all its threads / wall time). The capture child's
  work does not depend on N: its own column. Receivers' CPU and every other process's
  (machine busy minus ours) are reported too: on a shared 2-core box they set how far the
  figures can be trusted.
- Event-loop lag p50/p99/max: each server samples its own loop (a 10 ms timer's overshoot,
  broadcaster.server.looplag) and reports quantiles over its last 10 s; read at the end of
  the window. Ours: /metrics ``broadcaster_loop_lag_seconds``; stock and naive: GET
  /bench/lag (the same class).
- Delivery: RTP packets received / packets expected, where

      expected = F x N x P
      F = frames the source produced in the window (ours: capture framesets, /healthz;
          stock: frames of the rung from the capture; naive: frames of the source track)
      P = RTP packets per frame as the senders packetized them, from the receivers:
          (media packets received + lost by sequence-number gap) / frames seen

  "Frames seen" counts distinct RTP timestamps (a frame of which some packet arrived). So
  delivery = (frames seen / (F x N)) x (received / (received + lost)): the share of the
  source's frames that reached the viewers, times the share of their packets that arrived.
  It drops when a server falls behind (frames left queued, dropped on overflow, or sent
  after the window) and when packets are lost on the way (socket buffers). RTX and probe
  packets count on neither side. Target: >= 99 %. A row under HEALTHY_DELIVERY of frames is
  marked starved: that server did not keep up, and its CPU figure understates its cost
  ("if kept up" divides by the share delivered). "Worst viewer" = the lowest frames-seen
  share of any one viewer, so a stalled viewer cannot hide in the sum.

Trust: two columns say whether a row measured the server or the machine. "server waiting
for CPU" is the share of the window its event-loop thread was runnable but not running
(Linux schedstat): loop lag it explains is other processes, not the server's own work.
"UDP drops" counts datagrams the kernel dropped on full receive buffers (machine-wide): a
rise means some receiver fell behind, so lost packets may not be the server's fault.

Ratios (stock/ours at equal N; naive/ours against naive's largest N that kept up) come
from the same run. Prints the tables; writes bench/out/fanout.{json,md,png} (the server,
receiver logs and the generated config beside them). Not a test: it asserts nothing.
All traffic stays on 127.0.0.1; every process it starts is stopped by pid before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import socket
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The checkout under test, whether or not (or from wherever) the package is installed:
# first on the path here and, through PYTHONPATH, in every process we start.
sys.path.insert(0, str(ROOT))
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
OUT = BENCH / "out"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
START_TIMEOUT = 30.0  # server up and healthy
STOP_TIMEOUT = 15.0  # graceful stop before SIGKILL
DRAIN_TIMEOUT = 15.0  # server notices every viewer left
NOMINAL_FPS = 30.0  # every design sends 30 fps when it keeps up
HEALTHY_DELIVERY = 0.97  # below this share of frames a row is CPU-starved, not a fair price
DELIVERY_TARGET = 0.99  # issue 6: packets delivered / expected
VIEWERS_PER_WORKER = 50  # viewers per receiver process (2 cores: more processes won't help)
# Receivers yield the CPU to the server under test (and its capture) when the machine is
# saturated: the load generator should not make the server look slow.
RECEIVER_NICE = 10
# --audio: every viewer also takes the sound (set once from the command line).
RECEIVERS_WANT_AUDIO = False
DESIGNS = ("ours", "stock", "naive")
COLOURS = {"ours": "tab:blue", "stock": "tab:orange", "naive": "tab:red"}
LOG_NAMES = [f"fanout-{d}-server.log" for d in DESIGNS] + ["fanout-receivers.log"]

# Issue 6's targets, checked in the report.
TARGET_CPU_PER_VIEWER = 0.2  # % of a core, ours
TARGET_OVER_STOCK = 2.0
TARGET_OVER_NAIVE = 40.0
TARGET_LAG_P99_MS = 20.0  # ours, at the largest N (200)

# Every process this run started, so the last-resort cleanup can find them by pid.
STARTED: list[int] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """user+system CPU of exactly these processes (threads included, their children not)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def runqueue_wait_seconds(pid: int) -> float | None:
    """Time the process's main thread (its event loop) spent runnable but not running.

    Linux schedstat. Loop lag that this does not explain is the loop's own work; lag it
    does explain is other processes taking the CPU (on a shared machine, often).
    """
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def udp_receive_drops() -> int | None:
    """Machine-wide UDP datagrams dropped on full receive buffers (/proc/net/snmp).

    On loopback nothing else drops packets: a rise means some receiver (ours or, on a
    shared machine, anyone's) did not read its socket in time.
    """
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
        names, values = [ln for ln in lines if ln and ln[0] == "Udp:"][:2]
        return int(values[names.index("RcvbufErrors")])
    except (OSError, ValueError):
        return None


async def spawn(
    argv: list[str], stdin: int | None, stdout: int | None, log_name: str
) -> asyncio.subprocess.Process:
    errlog = open(OUT / log_name, "ab")  # the child gets its own copy of the fd
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            stdin=stdin,
            stdout=stdout,
            stderr=errlog,
            env=CHILD_ENV,
            # Own session: a Ctrl-C in the terminal reaches only us, and we stop
            # our children in order (viewers first, then servers).
            start_new_session=True,
        )
    finally:
        errlog.close()
    STARTED.append(proc.pid)
    return proc


def kill_tree(pid: int) -> None:
    """SIGKILL a process we started and whatever it started, each by pid."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.Error):
                p.kill()


async def stop_process(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        log(f"pid {proc.pid} ignored signal {sig}; killing it")
        kill_tree(proc.pid)
        await proc.wait()


# ---------------------------------------------------------------- the servers' config


def write_config(rung: str, full_ladder: bool) -> Path:
    """The broadcaster config ours and stock run with; validated before use.

    Admission limits are lifted: every viewer comes from 127.0.0.1 within seconds, which
    the per-IP offer rate would (rightly) refuse. A broadcaster without [limits] gets the
    file without it.
    """
    from broadcaster.config import ConfigError, parse_config

    ladder = [r for r in parse_config({}).ladder if full_ladder or r.name == rung]
    if rung not in [r.name for r in ladder]:
        raise SystemExit(f"--rung {rung!r} is not a rung of the default ladder")
    head = ["# written by bench/fanout.py", "[server]", 'host = "127.0.0.1"', ""]
    limits = ["[limits]", "max_viewers = 0", "offers_per_minute = 0", ""]
    rungs = [
        f'[[ladder]]\nname = "{r.name}"\nwidth = {r.width}\nheight = {r.height}\n'
        f"fps = {r.fps}\nbitrate = {r.bitrate}\n"
        for r in ladder
    ]
    text = "\n".join(head + limits + rungs)
    try:
        parse_config(tomllib.loads(text))
    except ConfigError:
        text = "\n".join(head + rungs)
        parse_config(tomllib.loads(text))
    path = OUT / "fanout-config.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- servers under test


@dataclass
class ServerCounters:
    """Cumulative counters from a server (None where it has none), plus its loop lag."""

    source_frames: float | None = None  # frames of the measured stream the source produced
    frames: float | None = None  # frames handed to viewers' senders
    bytes: float | None = None  # encoded bytes handed to viewers' senders
    packets: float | None = None  # RTP packets the senders report sent (naive only)
    keyframes: float | None = None
    # Event-loop lag over the server's last window, seconds (a gauge, not cumulative).
    lag: dict[str, float] = field(default_factory=dict)


_LAG_LINE = re.compile(
    r'^broadcaster_loop_lag_(?:seconds\{quantile="(0\.5|0\.99)"\}|(max)_seconds) (\S+)$'
)


def parse_ours(metrics: str, health: str, _lag: str | None) -> ServerCounters:
    # Prometheus text: sum over rungs, so a viewer on another rung is still counted.
    sums = {"frames_out": 0.0, "bytes_out": 0.0, "keyframes": 0.0}
    lag: dict[str, float] = {}
    for line in metrics.splitlines():
        for name in sums:
            if line.startswith(f"broadcaster_{name}_total{{"):
                sums[name] += float(line.rsplit(" ", 1)[1])
        m = _LAG_LINE.match(line)
        if m:
            lag[{"0.5": "p50", "0.99": "p99"}.get(m[1] or "", "max")] = float(m[3])
    return ServerCounters(
        # Capture framesets: every rung has a frame in each at the default fps.
        source_frames=json.loads(health)["frames"],
        frames=sums["frames_out"],
        bytes=sums["bytes_out"],
        keyframes=sums["keyframes"],
        lag=lag,  # empty while app.py does not start the sampler
    )


def _lag_json(text: str | None) -> dict[str, float]:
    data = json.loads(text) if text else {}
    return {k: float(data[k]) for k in ("p50", "p99", "max") if k in data}


def parse_stock(metrics: str, _health: str, lag: str | None) -> ServerCounters:
    data = json.loads(metrics)
    return ServerCounters(
        source_frames=data["source_frames"],
        frames=data["frames_out"],
        bytes=data["bytes_out"],
        keyframes=data["keyframes"],
        lag=_lag_json(lag),
    )


def parse_naive(metrics: str, _health: str, lag: str | None) -> ServerCounters:
    data = json.loads(metrics)
    return ServerCounters(
        source_frames=data["source_frames"], packets=data["packets_sent"], lag=_lag_json(lag)
    )


@dataclass
class Design:
    name: str
    argv: Callable[[int], list[str]]
    # (/metrics, /healthz, /bench/lag or None) bodies -> counters
    parse: Callable[[str, str, str | None], ServerCounters]
    lag_path: str | None  # where the lag is, if not in /metrics
    rung: str | None  # pin viewers to this rung via the WHEP layer link
    has_capture_child: bool


def ours(rung: str, config: Path) -> Design:
    return Design(
        "ours",
        lambda port: [
            sys.executable,
            "-m",
            "broadcaster.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--quiet",
        ],
        parse_ours,
        None,
        rung,
        True,
    )


def stock(rung: str, config: Path) -> Design:
    script = str(BENCH / "stock_server.py")
    return Design(
        "stock",
        lambda port: (
            [sys.executable, script, "--port", str(port), "--config", str(config)]
            + ["--rung", rung]
        ),
        parse_stock,
        "bench/lag",
        None,  # one stream only: nothing to pin
        True,
    )


def naive(bitrate: int) -> Design:
    script = str(BENCH / "naive_server.py")
    return Design(
        "naive",
        lambda port: [sys.executable, script, "--port", str(port), "--bitrate", str(bitrate)],
        parse_naive,
        "bench/lag",
        None,
        False,
    )


@dataclass
class Server:
    design: Design
    proc: asyncio.subprocess.Process
    url: str
    http: aiohttp.ClientSession

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def children(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return list(self.process.children(recursive=True))
        return []

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def counters(self) -> ServerCounters:
        lag_path = self.design.lag_path
        (status, metrics), (_, health), lag = await asyncio.gather(
            self.get("metrics"),
            self.get("healthz"),
            self.get(lag_path) if lag_path else _none(),
        )
        if status != 200:
            raise RuntimeError(f"{self.design.name} /metrics: {status}")
        return self.design.parse(metrics, health, lag[1] if lag else None)

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.design.name} server exited ({self.proc.returncode})")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                if (await self.get("healthz"))[0] == 200:
                    return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"{self.design.name} server not healthy in {START_TIMEOUT:.0f}s")

    async def wait_no_viewers(self) -> None:
        """Sessions close asynchronously after DELETE; the next N starts from zero."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                status, text = await self.get("healthz")
                if json.loads(text).get("viewers") == 0:
                    return
            await asyncio.sleep(0.25)
        log(f"{self.design.name}: viewers still registered after {DRAIN_TIMEOUT:.0f}s")


async def _none() -> None:
    return None


@contextlib.asynccontextmanager
async def running_server(design: Design, http: aiohttp.ClientSession) -> AsyncIterator[Server]:
    port = free_port()
    proc = await spawn(
        design.argv(port),
        asyncio.subprocess.DEVNULL,
        asyncio.subprocess.DEVNULL,
        f"fanout-{design.name}-server.log",
    )
    server = Server(design, proc, f"http://127.0.0.1:{port}/", http)
    try:
        await server.wait_healthy()
        log(f"{design.name} server up: pid {proc.pid}, {server.url}")
        yield server
    finally:
        # Remember the children before the signal: if the server dies first, its
        # capture child would be orphaned and we could no longer find it.
        children = server.children()
        await stop_process(proc, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.wait(timeout=5)
            with contextlib.suppress(psutil.Error):
                child.kill()


# ---------------------------------------------------------------- receivers


RECEIVED_SUMS = ("packets", "lost", "rtx", "frames", "bytes", "connected")


@dataclass
class Received:
    """What the receivers counted, cumulative (see bench/receivers.py)."""

    packets: int = 0  # media RTP packets received
    lost: int = 0  # media packets missing from the sequence numbers
    rtx: int = 0
    frames: int = 0  # frames seen (distinct RTP timestamps), summed over viewers
    bytes: int = 0  # encoded bytes (VP8 payload without descriptor)
    connected: int = 0
    frames_each: list[int] = field(default_factory=list)


@dataclass
class ReceiverWorker:
    proc: asyncio.subprocess.Process

    async def request(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.reply(timeout)

    async def reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"receiver worker {self.proc.pid} exited")
        reply: dict[str, Any] = json.loads(line)
        return reply


@dataclass
class ReceiverPool:
    """N viewers spread over a few worker processes; summed counters."""

    workers: list[ReceiverWorker] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def processes(self) -> list[psutil.Process]:
        out = []
        for w in self.workers:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(w.proc.pid))
        return out

    async def start(self, url: str, count: int, rung: str | None) -> None:
        script = str(BENCH / "receivers.py")
        for n in split(count, VIEWERS_PER_WORKER):
            argv = [sys.executable, script, "--url", url, "--count", str(n)]
            argv += ["--nice", str(RECEIVER_NICE)]
            if RECEIVERS_WANT_AUDIO:
                argv.append("--audio")
            if rung:
                argv += ["--rung", rung]
            proc = await spawn(
                argv, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE, "fanout-receivers.log"
            )
            self.workers.append(ReceiverWorker(proc))
        timeout = 30.0 + count * 0.5
        for ready in await asyncio.gather(*(w.reply(timeout) for w in self.workers)):
            self.failed += int(ready["failed"])
            self.errors += ready["errors"]

    async def stats(self) -> Received:
        replies = await asyncio.gather(*(w.request("stats", 10.0) for w in self.workers))
        return Received(
            **{k: sum(int(r[k]) for r in replies) for k in RECEIVED_SUMS},
            # Worker order is fixed, and so is each worker's viewer order.
            frames_each=[int(f) for r in replies for f in r["frames_each"]],
        )

    async def stop(self) -> None:
        async def one(w: ReceiverWorker) -> None:
            try:
                await w.request("stop", STOP_TIMEOUT)
            except (RuntimeError, TimeoutError, ConnectionError, ValueError):
                pass  # already gone or stuck: stop_process below deals with it
            await stop_process(w.proc, signal.SIGTERM)

        await asyncio.gather(*(one(w) for w in self.workers))


def split(count: int, per: int) -> list[int]:
    """``count`` viewers over as few workers as hold ``per`` each, evenly."""
    workers = max(1, -(-count // per))
    return [count // workers + (1 if i < count % workers else 0) for i in range(workers)]


# ---------------------------------------------------------------- one measurement


@dataclass
class Snapshot:
    at: float
    server_cpu: float
    capture_cpu: float
    receivers_cpu: float
    machine_busy: float
    server_runq_wait: float | None
    udp_drops: int | None
    sent: ServerCounters
    received: Received


@dataclass
class Row:
    design: str
    viewers: int
    connected: int
    seconds: float
    server_cpu_pct: float
    cpu_pct_per_viewer: float | None
    # Same, divided by the share of the source's frames the viewers got: a server that
    # falls behind sends less and would look cheaper than it is.
    cpu_pct_per_viewer_kept_up: float | None
    capture_cpu_pct: float | None
    receivers_cpu_pct: float
    receivers_cpu_pct_per_viewer: float | None
    machine_busy_pct: float  # of ALL cores (100 % = every core busy)
    others_cpu_pct: float  # machine busy minus our processes, % of one core: shared-box noise
    # Server's loop thread runnable but waiting for a CPU, % of the window (other processes).
    server_cpu_wait_pct: float | None
    udp_drops: int | None  # machine-wide receive-buffer drops in the window
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    kbit_per_viewer: float | None
    fps_per_viewer: float | None  # frames seen per viewer per second
    source_fps: float | None
    keyframes_per_s: float | None
    packets_per_s_per_viewer: float | None
    packets_per_frame: float | None  # P in the docstring's expected = F x N x P
    packets_expected: float | None
    packets_delivered: float | None  # received / expected (the >= 99 % target)
    frames_delivered: float | None  # frames seen / (F x N)
    worst_viewer_frames: float | None  # lowest frames seen / F of any viewer
    bytes_delivered: float | None  # encoded bytes received / handed to senders (ours, stock)
    packets_lost: int
    rtx_packets: int
    server_packets_sent: float | None  # naive: its senders' own count, for cross-checking
    stock_over_ours: float | None = None
    naive_over_ours: float | None = None


async def snapshot(server: Server, capture: list[psutil.Process], pool: ReceiverPool) -> Snapshot:
    sent, received = await asyncio.gather(
        server.counters(), pool.stats() if pool.workers else _no_stats()
    )
    return Snapshot(
        at=time.monotonic(),
        server_cpu=cpu_seconds([server.process]),
        capture_cpu=cpu_seconds(capture),
        receivers_cpu=cpu_seconds(pool.processes),
        machine_busy=machine_busy_seconds(),
        server_runq_wait=runqueue_wait_seconds(server.proc.pid),
        udp_drops=udp_receive_drops(),
        sent=sent,
        received=received,
    )


async def _no_stats() -> Received:
    return Received()


def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def delta(b: float | None, a: float | None) -> float | None:
    return None if a is None or b is None else b - a


def ms(lag: dict[str, float], key: str) -> float | None:
    v = lag.get(key)
    return None if v is None or math.isnan(v) else 1000 * v


def to_row(design: Design, n: int, a: Snapshot, b: Snapshot) -> Row:
    wall = b.at - a.at
    ra, rb = a.received, b.received
    rx_packets, lost = rb.packets - ra.packets, rb.lost - ra.lost
    rx_frames, rx_bytes = rb.frames - ra.frames, rb.bytes - ra.bytes
    ours_cpu = sum(
        getattr(b, k) - getattr(a, k) for k in ("server_cpu", "capture_cpu", "receivers_cpu")
    )
    src = delta(b.sent.source_frames, a.sent.source_frames)
    expected_frames = src * n if src is not None and n else None
    per_frame = (rx_packets + lost) / rx_frames if rx_frames else None
    expected = expected_frames * per_frame if expected_frames is not None and per_frame else None
    worst = None
    if n and src and len(ra.frames_each) == len(rb.frames_each) == n:
        worst = min(y - x for x, y in zip(ra.frames_each, rb.frames_each, strict=True)) / src
    receivers_cpu = 100 * (b.receivers_cpu - a.receivers_cpu) / wall
    return Row(
        design=design.name,
        viewers=n,
        connected=rb.connected,
        seconds=round(wall, 2),
        server_cpu_pct=100 * (b.server_cpu - a.server_cpu) / wall,
        cpu_pct_per_viewer=None,
        cpu_pct_per_viewer_kept_up=None,
        capture_cpu_pct=(
            100 * (b.capture_cpu - a.capture_cpu) / wall if design.has_capture_child else None
        ),
        receivers_cpu_pct=receivers_cpu,
        receivers_cpu_pct_per_viewer=receivers_cpu / n if n else None,
        machine_busy_pct=100 * (b.machine_busy - a.machine_busy) / wall / psutil.cpu_count(),
        others_cpu_pct=max(0.0, 100 * (b.machine_busy - a.machine_busy - ours_cpu) / wall),
        server_cpu_wait_pct=ratio(delta(b.server_runq_wait, a.server_runq_wait), wall / 100),
        udp_drops=None if a.udp_drops is None or b.udp_drops is None else b.udp_drops - a.udp_drops,
        # The lag is the server's own window, read at the end of ours.
        lag_p50_ms=ms(b.sent.lag, "p50"),
        lag_p99_ms=ms(b.sent.lag, "p99"),
        lag_max_ms=ms(b.sent.lag, "max"),
        kbit_per_viewer=rx_bytes * 8 / 1000 / wall / n if n else None,
        fps_per_viewer=rx_frames / wall / n if n else None,
        source_fps=None if src is None else src / wall,
        keyframes_per_s=ratio(delta(b.sent.keyframes, a.sent.keyframes), wall),
        packets_per_s_per_viewer=rx_packets / wall / n if n else None,
        packets_per_frame=per_frame,
        packets_expected=expected,
        packets_delivered=ratio(rx_packets, expected) if n else None,
        frames_delivered=ratio(rx_frames, expected_frames) if n else None,
        worst_viewer_frames=worst,
        bytes_delivered=ratio(rx_bytes, delta(b.sent.bytes, a.sent.bytes)) if n else None,
        packets_lost=lost,
        rtx_packets=rb.rtx - ra.rtx,
        server_packets_sent=delta(b.sent.packets, a.sent.packets),
    )


async def measure(server: Server, n: int, settle: float, seconds: float) -> Row:
    design = server.design
    pool = ReceiverPool()
    try:
        if n:
            started = time.monotonic()
            await pool.start(server.url, n, design.rung)
            log(
                f"{design.name} N={n}: viewers up in {time.monotonic() - started:.1f}s"
                f" ({pool.failed} failed{': ' + pool.errors[0] if pool.errors else ''})"
            )
        await asyncio.sleep(settle)
        # The capture child only: it encodes once whatever N is.
        capture = server.children() if design.has_capture_child else []
        a = await snapshot(server, capture, pool)
        await asyncio.sleep(seconds)
        b = await snapshot(server, capture, pool)
    finally:
        await pool.stop()
        await server.wait_no_viewers()
    row = to_row(design, n, a, b)
    log(
        f"{design.name} N={n}: server {row.server_cpu_pct:.1f}% of a core, "
        f"lag p99 {pct(row.lag_p99_ms)} ms, delivered {pct(pct_of(row.packets_delivered))}%, "
        f"receivers {row.receivers_cpu_pct:.0f}% ({pct(row.receivers_cpu_pct_per_viewer, 2)}"
        f"%/viewer), machine {row.machine_busy_pct:.0f}% busy, server waited for CPU "
        f"{pct(row.server_cpu_wait_pct)}%, UDP drops {row.udp_drops}"
    )
    return row


async def run_design(design: Design, counts: list[int], settle: float, seconds: float) -> list[Row]:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
        running_server(design, http) as server,
    ):
        rows = [await measure(server, n, settle, seconds) for n in [0, *counts]]
    base = rows[0].server_cpu_pct
    for row in rows[1:]:
        row.cpu_pct_per_viewer = (row.server_cpu_pct - base) / row.viewers
        if row.frames_delivered:
            row.cpu_pct_per_viewer_kept_up = row.cpu_pct_per_viewer / min(1.0, row.frames_delivered)
    return rows


# ---------------------------------------------------------------- report


def keeps_up(row: Row) -> bool:
    # Above 100 % too: aiortc's buffered relay lets a lagging encoder catch up later.
    v = row.frames_delivered
    return (
        row.connected == row.viewers
        and v is not None
        and HEALTHY_DELIVERY <= v <= 2 - HEALTHY_DELIVERY
    )


def naive_reference(rows: list[Row]) -> Row | None:
    """Naive per-viewer cost at its largest N that still delivered every frame.

    Larger N amortizes measurement noise best, but once the machine is saturated the
    encoders fall behind, encode fewer frames and look cheaper per viewer than they are.
    """
    naive_rows = [r for r in rows if r.design == "naive" and r.viewers]
    healthy = [r for r in naive_rows if keeps_up(r)] or naive_rows
    return max(healthy, key=lambda r: r.viewers) if healthy else None


def add_ratios(rows: list[Row]) -> Row | None:
    """stock/ours at equal N, naive/ours against naive's reference row; returns that row.

    Only between rows that kept up: a starved server's cost is a guess ('if kept up'
    scales it by what it delivered), and a ratio of two guesses is noise.
    """
    stock_at = {r.viewers: r for r in rows if r.design == "stock" and keeps_up(r)}
    ref = naive_reference(rows)
    for row in rows:
        mine = row.cpu_pct_per_viewer_kept_up
        if row.design != "ours" or not mine or not keeps_up(row):
            continue
        other = stock_at.get(row.viewers)
        if other is not None and other.cpu_pct_per_viewer_kept_up is not None:
            row.stock_over_ours = other.cpu_pct_per_viewer_kept_up / mine
        if ref is not None and keeps_up(ref) and ref.cpu_pct_per_viewer_kept_up is not None:
            row.naive_over_ours = ref.cpu_pct_per_viewer_kept_up / mine
    return ref


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pct_of(share: float | None) -> float | None:
    return None if share is None else 100 * share


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def starred(row: Row, text: str) -> str:
    return text if text == "-" or keeps_up(row) else text + "*"


FULL_HEADER = [
    "design",
    "N",
    "server CPU %",
    "CPU %/viewer",
    "CPU %/viewer if kept up",
    "capture CPU %",
    "receivers CPU % (per viewer)",
    "other procs CPU %",
    "machine busy %",
    "server waiting for CPU %",
    "UDP drops",
    "kbit/s/viewer",
    "source fps",
    "fps/viewer",
    "pkts/frame",
    "loop lag p50/p99/max ms",
    "packets delivered %",
    "frames delivered % (worst viewer)",
    "stock/ours",
    "naive/ours",
]


def full_rows(rows: list[Row]) -> list[list[str]]:
    return [
        [
            r.design,
            str(r.viewers) + ("" if r.connected == r.viewers else f" ({r.connected} up)"),
            pct(r.server_cpu_pct),
            starred(r, pct(r.cpu_pct_per_viewer, 2)),
            pct(r.cpu_pct_per_viewer_kept_up, 2),
            pct(r.capture_cpu_pct),
            f"{r.receivers_cpu_pct:.1f} ({pct(r.receivers_cpu_pct_per_viewer, 2)})",
            pct(r.others_cpu_pct),
            pct(r.machine_busy_pct, 0),
            pct(r.server_cpu_wait_pct),
            "-" if r.udp_drops is None else str(r.udp_drops),
            pct(r.kbit_per_viewer, 0),
            pct(r.source_fps),
            pct(r.fps_per_viewer),
            pct(r.packets_per_frame, 2),
            "/".join(pct(v) for v in (r.lag_p50_ms, r.lag_p99_ms, r.lag_max_ms)),
            pct(pct_of(r.packets_delivered), 2),
            f"{pct(pct_of(r.frames_delivered), 2)} ({pct(pct_of(r.worst_viewer_frames))})",
            times(r.stock_over_ours),
            times(r.naive_over_ours),
        ]
        for r in rows
    ]


SUMMARY_HEADER = [
    "viewers",
    "server CPU % of a core per viewer: ours / stock / naive",
    "stock/ours",
    "naive/ours",
    "event-loop lag p99 ms: ours / stock / naive",
    "packets delivered %: ours / stock / naive",
]


def summary_rows(rows: list[Row]) -> list[list[str]]:
    """One line per N across the designs: the table for the README."""
    at = {(r.design, r.viewers): r for r in rows}

    def cells(n: int, fmt: Callable[[Row], str]) -> str:
        out = []
        for d in DESIGNS:
            r = at.get((d, n))
            out.append("-" if r is None else starred(r, fmt(r)))
        return " / ".join(out)

    table = []
    for n in sorted({r.viewers for r in rows if r.viewers}):
        ours_row = at.get(("ours", n))
        table.append(
            [
                str(n),
                cells(n, lambda r: pct(r.cpu_pct_per_viewer, 2)),
                times(ours_row.stock_over_ours) if ours_row else "-",
                times(ours_row.naive_over_ours) if ours_row else "-",
                cells(n, lambda r: pct(r.lag_p99_ms)),
                cells(n, lambda r: pct(pct_of(r.packets_delivered))),
            ]
        )
    return table


def targets(rows: list[Row], ref: Row | None) -> list[str]:
    """Issue 6's targets against this run: cost at ours' largest N that kept up, lag there
    and at the largest N measured, delivery at every N."""
    mine = [r for r in rows if r.design == "ours" and r.viewers]
    if not mine:
        return []
    top = max(mine, key=lambda r: r.viewers)
    healthy = [r for r in mine if keeps_up(r)]
    best = max(healthy, key=lambda r: r.viewers) if healthy else None

    def verdict(value: float | None, ok: Callable[[float], bool]) -> str:
        return "not measured" if value is None else ("met" if ok(value) else "NOT met")

    def contended(r: Row) -> str:
        wait = r.server_cpu_wait_pct
        if keeps_up(r) and (wait is None or wait <= 5):
            return ""
        state = "kept up" if keeps_up(r) else "STARVED"
        return f" ({state}; server waited for a CPU {pct(wait, 0)} % of the window)"

    lines = []
    if best is None:
        lines.append("ours kept up at no N: cost and ratio targets not measured")
    else:
        at = f"at N={best.viewers}" + (
            "" if best is top else f" (largest N that kept up; N={top.viewers} did not)"
        )
        per = best.cpu_pct_per_viewer_kept_up
        lines += [
            f"ours <= {TARGET_CPU_PER_VIEWER} % of a core per viewer {at}: {pct(per, 2)} % -> "
            + verdict(per, lambda v: v <= TARGET_CPU_PER_VIEWER),
            f"ours >= {TARGET_OVER_STOCK:g}x better than stock {at}: "
            f"{times(best.stock_over_ours)} -> "
            + verdict(best.stock_over_ours, lambda v: v >= TARGET_OVER_STOCK),
            f"ours >= {TARGET_OVER_NAIVE:g}x better than naive {at}"
            + (f", naive at N={ref.viewers}" if ref else "")
            + f": {times(best.naive_over_ours)} -> "
            + verdict(best.naive_over_ours, lambda v: v >= TARGET_OVER_NAIVE),
        ]
    for r in [top] if best in (None, top) else [best, top]:
        lines.append(
            f"ours event-loop lag p99 < {TARGET_LAG_P99_MS:g} ms at N={r.viewers}: "
            f"{pct(r.lag_p99_ms)} ms{contended(r)} -> "
            + verdict(r.lag_p99_ms, lambda v: v < TARGET_LAG_P99_MS)
        )
    deliveries = [r.packets_delivered for r in mine if r.packets_delivered is not None]
    worst = min(mine, key=lambda r: r.packets_delivered or 0.0) if deliveries else None
    if worst is not None:
        lines.append(
            f"ours packets delivered >= {100 * DELIVERY_TARGET:g} % at every N: lowest "
            f"{pct(pct_of(worst.packets_delivered), 2)} % at N={worst.viewers}"
            f"{contended(worst)} -> "
            + verdict(worst.packets_delivered, lambda v: v >= DELIVERY_TARGET)
        )
    return lines


def md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def markdown(rows: list[Row], goals: list[str], notes: list[str]) -> str:
    return "\n".join(
        [
            "# Fan-out cost",
            "",
            *md_table(SUMMARY_HEADER, summary_rows(rows)),
            "",
            "Targets (issue 6):",
            "",
            *[f"- {g}" for g in goals],
            "",
            "## Every row",
            "",
            *md_table(FULL_HEADER, full_rows(rows)),
            "",
            *[f"- {n}" for n in notes],
            "",
        ]
    )


def plain(header: list[str], body: list[list[str]]) -> str:
    table = [header, *body]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table)


LABELS = {
    "ours": "ours (broadcaster serve)",
    "stock": "stock (aiortc pre-encoded sender)",
    "naive": "naive (1 encoder/viewer)",
}


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (total, per, lag) = plt.subplots(1, 3, figsize=(15, 4.4))
    for design in DESIGNS:
        mine = [r for r in rows if r.design == design]
        if not mine:
            continue
        colour = COLOURS[design]
        total.plot(
            [r.viewers for r in mine],
            [r.server_cpu_pct for r in mine],
            "o-",
            color=colour,
            label=LABELS[design],
        )
        points = [
            (r.viewers, r.cpu_pct_per_viewer_kept_up, r)
            for r in mine
            if r.cpu_pct_per_viewer_kept_up is not None and r.cpu_pct_per_viewer_kept_up > 0
        ]
        per.plot([x for x, _, _ in points], [y for _, y, _ in points], "-", color=colour)
        for x, y, r in points:
            ok = keeps_up(r)
            # Hollow marker: the server fell behind (scaled figure, less certain).
            per.plot([x], [y], "o", color=colour, markerfacecolor=colour if ok else "white")
            per.annotate(
                f"{y:.2f}" + ("" if ok else " (starved)"),
                (x, y),
                textcoords="offset points",
                # ours below its point, the others above: ours and stock often coincide.
                xytext=(4, -12) if design == "ours" else (4, 4),
                fontsize=8,
                color=colour,
            )
        lags = [(r.viewers, r.lag_p99_ms, r) for r in mine if r.lag_p99_ms]
        lag.plot([x for x, _, _ in lags], [y for _, y, _ in lags], "-", color=colour, label=design)
        for x, y, r in lags:
            face = colour if keeps_up(r) or not r.viewers else "white"
            lag.plot([x], [y], "o", color=colour, markerfacecolor=face)
    per.axhline(TARGET_CPU_PER_VIEWER, color="tab:green", ls=":", label="target (ours)")
    lag.axhline(TARGET_LAG_P99_MS, color="tab:green", ls=":", label="target (ours)")
    capture = [r for r in rows if r.design == "ours" and r.capture_cpu_pct is not None]
    if capture:
        total.plot(
            [r.viewers for r in capture],
            [r.capture_cpu_pct for r in capture],
            "s--",
            color="tab:gray",
            label="capture process (encodes once; ours and stock)",
        )
    total.set(xlabel="viewers", ylabel="CPU % of one core", title="Server process CPU vs viewers")
    per.set(
        xlabel="viewers",
        ylabel="CPU % of one core per viewer (if kept up)",
        yscale="log",
        title="Marginal server CPU per viewer",
    )
    lag.set(
        xlabel="viewers",
        ylabel="ms (hollow: starved row)",
        yscale="log",
        title="Server event-loop lag p99",
    )
    for ax in (per, lag):
        # Plain numbers on the log axis: "1.5" reads better than "1.5 x 10^0".
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in (total, per, lag):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    rows: list[Row], goals: list[str], notes: list[str], meta: dict[str, Any]
) -> None:
    OUT.mkdir(exist_ok=True)
    data = {**meta, "rows": [asdict(r) for r in rows], "targets": goals, "notes": notes}
    (OUT / "fanout.json").write_text(json.dumps(data, indent=2) + "\n")
    (OUT / "fanout.md").write_text(markdown(rows, goals, notes))
    plot(rows, OUT / "fanout.png")


def make_notes(
    args: argparse.Namespace, ref: Row | None, rows: list[Row], elapsed: float
) -> list[str]:
    ladder = "default ladder (720p/360p/180p)" if args.full_ladder else f"{args.rung} only"
    notes = [
        f"command: {' '.join(['python', *sys.argv])}; ran {elapsed:.0f}s on "
        f"{psutil.cpu_count()} cores; {args.seconds:g}s window after {args.settle:g}s settle",
        "CPU % is of ONE core (user+system CPU time / wall time) of the server process "
        "alone. CPU %/viewer = (server CPU % at N - at N=0) / N. * = starved row: frames "
        f"delivered outside {100 * HEALTHY_DELIVERY:.0f}-{200 - 100 * HEALTHY_DELIVERY:.0f}%"
        " (the server did not keep up; its cost is understated).",
        f"ours: viewers pinned to {args.rung} via the WHEP layer link; stock: the same "
        f"capture process and bitstream. Their ladder: {ladder}. The capture child is its "
        "own column (it encodes once, whatever N).",
        f"naive: aiortc MediaRelay of one 640x360 30 fps test-pattern track, VP8-encoded per "
        f"viewer by aiortc at {args.naive_bitrate} kbit/s. N list kept small "
        f"({', '.join(map(str, args.naive_viewers)) or 'skipped'}): ~10% of a core per viewer.",
        "event-loop lag: each server's own 10 ms timer overshoot (broadcaster.server.looplag), "
        "p50/p99/max over its last 10 s, read at the end of the window.",
        "delivered: packets received / (source frames x N x packets per frame), see "
        "bench/fanout.py; worst viewer = lowest share of source frames any one viewer saw.",
        "receivers: separate processes, "
        f"{VIEWERS_PER_WORKER} viewers each at nice {RECEIVER_NICE}, counting RTP only (no "
        "jitter buffer, no decoding, no REMB/NACK); they share the machine with the server.",
    ]
    if ref is not None and ref.cpu_pct_per_viewer_kept_up is not None:
        notes.append(
            "ratios use 'if kept up' per-viewer costs, only between rows that kept up; "
            "stock/ours at equal N; naive/ours "
            f"against naive at N={ref.viewers} ({ref.cpu_pct_per_viewer_kept_up:.2f}% of a "
            "core; its largest N that kept up)."
        )
    return notes + warnings(rows)


def warnings(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        tag = f"WARNING {r.design} N={r.viewers}:"
        if r.viewers and r.connected < r.viewers:
            out.append(f"{tag} only {r.connected} connected")
        if r.others_cpu_pct > 20:
            out.append(
                f"{tag} {r.others_cpu_pct:.0f}% of a core used by processes not started by "
                "this benchmark (shared machine)"
            )
        if r.udp_drops:
            out.append(
                f"{tag} {r.udp_drops} UDP datagrams dropped on full receive buffers "
                "(machine-wide): lost packets may be the receivers' doing, not the server's"
            )
        if r.server_cpu_wait_pct is not None and r.server_cpu_wait_pct > 5:
            out.append(
                f"{tag} the server's loop thread waited for a CPU {r.server_cpu_wait_pct:.0f}% "
                "of the time: part of its loop lag is other processes, not its own work"
            )
        if r.machine_busy_pct > 90:
            out.append(f"{tag} machine {r.machine_busy_pct:.0f}% busy, figures are CPU-bound")
        if r.source_fps is not None and r.source_fps < HEALTHY_DELIVERY * NOMINAL_FPS:
            out.append(
                f"{tag} source ran at {r.source_fps:.1f} fps (capture starved of CPU; its "
                "CPU % is understated)"
            )
        if r.viewers and r.lag_p99_ms is None:
            out.append(f"{tag} no event-loop lag reported (ours: app.py not wiring looplag?)")
        if r.frames_delivered is not None and not keeps_up(r):
            out.append(
                f"{tag} frames delivered {100 * r.frames_delivered:.1f}% of expected "
                "(server fell behind: CPU-starved)"
            )
        elif r.packets_delivered is not None and r.packets_delivered < DELIVERY_TARGET:
            out.append(
                f"{tag} packets delivered {100 * r.packets_delivered:.2f}% "
                f"(< {100 * DELIVERY_TARGET:g}%)"
            )
    return out


# ---------------------------------------------------------------- main


def counts(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("viewer counts must be positive")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--viewers", type=counts, default=[10, 50, 100, 200], help="ours and stock: N list"
    )
    p.add_argument(
        "--naive-viewers",
        type=counts,
        default=[1, 5, 10],
        help="naive baseline: N list (keep small: ~10%% of a core per viewer)",
    )
    p.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    p.add_argument("--settle", type=float, default=5.0, help="wait after viewers connect")
    p.add_argument("--rung", default="360p", help="the rung every viewer gets")
    p.add_argument(
        "--full-ladder",
        action="store_true",
        help="ours and stock encode the whole default ladder (not only --rung)",
    )
    p.add_argument("--naive-bitrate", type=int, default=800, help="kbit/s of each naive encoder")
    p.add_argument(
        "--audio",
        action="store_true",
        help="viewers also take the test tone (Opus, 50 packets/s): what sound adds per viewer",
    )
    p.add_argument(
        "--designs",
        type=lambda s: [d for d in s.split(",") if d],
        default=list(DESIGNS),
        help="comma-separated subset of ours,stock,naive",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=2400.0,
        help="abort (and clean up) after this many seconds",
    )
    args = p.parse_args(argv)
    unknown = set(args.designs) - set(DESIGNS)
    if unknown:
        p.error(f"unknown design(s): {', '.join(sorted(unknown))}")
    return args


async def run(args: argparse.Namespace, config: Path) -> list[Row]:
    # SIGTERM would otherwise end us on the spot and leave servers and viewers running:
    # turn it into a cancellation so every ``finally`` stops what it started.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    plan = [
        (ours(args.rung, config), args.viewers),
        (stock(args.rung, config), args.viewers),
        (naive(args.naive_bitrate), args.naive_viewers),
    ]
    rows: list[Row] = []
    for design, n_list in plan:
        if design.name in args.designs and n_list:
            rows += await run_design(design, n_list, args.settle, args.seconds)
    return rows


def last_resort_cleanup() -> None:
    """Anything we started that is somehow still alive: SIGKILL it by pid."""
    for pid in STARTED:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).is_running():
                kill_tree(pid)


def main(argv: list[str] | None = None) -> int:
    global RECEIVERS_WANT_AUDIO
    args = parse_args(argv)
    RECEIVERS_WANT_AUDIO = args.audio
    OUT.mkdir(exist_ok=True)
    for name in LOG_NAMES:
        (OUT / name).unlink(missing_ok=True)
    config = write_config(args.rung, args.full_ladder)
    started = time.monotonic()
    when = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        rows = asyncio.run(asyncio.wait_for(run(args, config), args.time_limit))
    except TimeoutError:
        log(f"aborted: over --time-limit {args.time_limit:g}s (every process stopped)")
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted (every process stopped)")
        return 130
    finally:
        last_resort_cleanup()
    elapsed = time.monotonic() - started
    ref = add_ratios(rows)
    goals = targets(rows, ref)
    notes = make_notes(args, ref, rows, elapsed)
    write_outputs(
        rows,
        goals,
        notes,
        {
            "started": when,
            "elapsed_s": round(elapsed, 1),
            "cpus": psutil.cpu_count(),
            "args": vars(args),
            "config": config.read_text(),
        },
    )
    print(plain(SUMMARY_HEADER, summary_rows(rows)))
    print()
    print(plain(FULL_HEADER, full_rows(rows)))
    print()
    print("\n".join(f"- {g}" for g in goals))
    print()
    print("\n".join(f"- {n}" for n in notes))
    print(f"\nwrote {OUT / 'fanout.json'}, {OUT / 'fanout.md'}, {OUT / 'fanout.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
