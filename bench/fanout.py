"""Fan-out cost: server CPU per WebRTC viewer, the broadcaster vs aiortc's usual way.

    python bench/fanout.py [--viewers 1,10,50] [--naive-viewers 1,5,10] [--seconds 15]
                           [--rung 360p]

Ours: ``broadcaster serve`` (capture subprocess encodes the ladder once; the server process
only packetizes, encrypts and sends). Naive: bench/naive_server.py, one aiortc VP8 encoder
per viewer behind MediaRelay. For each viewer count N, N real aiortc WHEP viewers run in
separate processes (bench/receivers.py; they do not decode), every ours-viewer pinned to
``--rung``; after a settle time the CPU time of the SERVER process alone is measured over
``--seconds`` (the capture child is reported separately: its work does not depend on N).

    CPU %/viewer = (server CPU % at N - server CPU % at N=0) / N     (% of one core)

Delivery is checked by comparing what the receivers got with what the server says it sent.
Prints a table; writes bench/out/fanout.{json,md,png}. Not a test: it asserts nothing.
All traffic stays on 127.0.0.1; every process it starts is stopped by pid before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
START_TIMEOUT = 30.0  # server up and healthy
STOP_TIMEOUT = 15.0  # graceful stop before SIGKILL
DRAIN_TIMEOUT = 10.0  # server notices every viewer left
NOMINAL_FPS = 30.0  # both designs send 30 fps when they keep up
HEALTHY_DELIVERY = 0.97  # below this share of frames a row is CPU-starved, not a fair price
VIEWERS_PER_WORKER = 25  # viewers per receiver process (2 cores: more processes won't help)

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


# ---------------------------------------------------------------- servers under test


@dataclass
class ServerCounters:
    """Cumulative 'sent' counters from a server's /metrics (None where it has none)."""

    frames: float | None = None
    bytes: float | None = None
    packets: float | None = None
    source_frames: float | None = None  # frames the source produced (ours: capture framesets)
    keyframes: float | None = None


def parse_ours(metrics: str, health: str) -> ServerCounters:
    # Prometheus text: sum over rungs, so a viewer on another rung is still counted
    # on both sides of the comparison.
    sums = {"frames_out": 0.0, "bytes_out": 0.0, "keyframes": 0.0}
    for line in metrics.splitlines():
        for name in sums:
            if line.startswith(f"broadcaster_{name}_total{{"):
                sums[name] += float(line.rsplit(" ", 1)[1])
    # Capture framesets: the capture process drops frames when it cannot keep up.
    return ServerCounters(
        frames=sums["frames_out"],
        bytes=sums["bytes_out"],
        keyframes=sums["keyframes"],
        source_frames=json.loads(health)["frames"],
    )


def parse_naive(metrics: str, _health: str) -> ServerCounters:
    data = json.loads(metrics)
    return ServerCounters(packets=data["packets_sent"], source_frames=data["source_frames"])


@dataclass
class Design:
    name: str
    argv: Callable[[int], list[str]]
    parse_metrics: Callable[[str, str], ServerCounters]  # (/metrics, /healthz) bodies
    rung: str | None  # pin viewers to this rung via the WHEP layer link
    has_capture_child: bool


def ours(rung: str) -> Design:
    exe = shutil.which("broadcaster")
    base = [exe] if exe else [sys.executable, "-m", "broadcaster.cli"]
    return Design(
        "ours",
        lambda port: [*base, "serve", "--port", str(port), "--quiet"],
        parse_ours,
        rung,
        True,
    )


def naive() -> Design:
    script = str(BENCH / "naive_server.py")
    return Design(
        "naive",
        lambda port: [sys.executable, script, "--port", str(port)],
        parse_naive,
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
        (status, metrics), (_, health) = await asyncio.gather(
            self.get("metrics"), self.get("healthz")
        )
        if status != 200:
            raise RuntimeError(f"{self.design.name} /metrics: {status}")
        return self.design.parse_metrics(metrics, health)

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

    async def stats(self) -> dict[str, int]:
        replies = await asyncio.gather(*(w.request("stats", 10.0) for w in self.workers))
        keys = ("packets", "lost", "frames", "bytes", "connected")
        return {k: sum(int(r[k]) for r in replies) for k in keys}

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
    sent: ServerCounters
    received: dict[str, int]


@dataclass
class Row:
    design: str
    viewers: int
    connected: int
    seconds: float
    server_cpu_pct: float
    cpu_pct_per_viewer: float | None
    # Same, divided by the share of handed-out frames the receivers got: a server that
    # falls behind (naive, CPU-starved) encodes and sends less and would look cheaper.
    # Not scaled by the source's fps: ours' per-viewer work is per RTP packet, and the
    # packet rate follows the bitrate (a capture starved to 13 fps still sends ~780 kbit/s).
    cpu_pct_per_viewer_kept_up: float | None
    capture_cpu_pct: float | None
    receivers_cpu_pct: float
    machine_busy_pct: float  # of ALL cores (100 % = every core busy)
    others_cpu_pct: float  # machine busy minus our processes, % of one core: shared-box noise
    kbit_per_viewer: float | None
    fps_per_viewer: float | None  # complete frames each receiver reassembled per second
    source_fps: float | None  # frames the source produced per second (ours: capture)
    keyframes_per_s: float | None  # ours: keyframes over all rungs (PLI/joins raise it)
    packets_per_s_per_viewer: float | None
    frames_delivered: float | None  # receivers' complete frames / server's frames sent
    bytes_delivered: float | None  # ours: encoded bytes received / handed to senders
    packets_delivered: float | None  # naive: RTP packets received / sent (incl. RTX)
    packets_lost: int
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
        sent=sent,
        received=received,
    )


async def _no_stats() -> dict[str, int]:
    return dict.fromkeys(("packets", "lost", "frames", "bytes", "connected"), 0)


def ratio(num: float, den: float | None) -> float | None:
    return num / den if den else None


def delta(b: float | None, a: float | None) -> float | None:
    return None if a is None or b is None else b - a


def to_row(design: Design, n: int, a: Snapshot, b: Snapshot) -> Row:
    wall = b.at - a.at
    rx = {k: b.received[k] - a.received[k] for k in b.received}
    ours_cpu = sum(
        getattr(b, k) - getattr(a, k) for k in ("server_cpu", "capture_cpu", "receivers_cpu")
    )
    frames_sent = delta(b.sent.frames, a.sent.frames)
    src = delta(b.sent.source_frames, a.sent.source_frames)
    if frames_sent is None and src is not None:
        frames_sent = src * n  # naive: the relay hands every source frame to every viewer
    return Row(
        design=design.name,
        viewers=n,
        connected=b.received["connected"],
        seconds=round(wall, 2),
        server_cpu_pct=100 * (b.server_cpu - a.server_cpu) / wall,
        cpu_pct_per_viewer=None,
        cpu_pct_per_viewer_kept_up=None,
        capture_cpu_pct=(
            100 * (b.capture_cpu - a.capture_cpu) / wall if design.has_capture_child else None
        ),
        receivers_cpu_pct=100 * (b.receivers_cpu - a.receivers_cpu) / wall,
        machine_busy_pct=100 * (b.machine_busy - a.machine_busy) / wall / psutil.cpu_count(),
        others_cpu_pct=max(0.0, 100 * (b.machine_busy - a.machine_busy - ours_cpu) / wall),
        kbit_per_viewer=rx["bytes"] * 8 / 1000 / wall / n if n else None,
        fps_per_viewer=rx["frames"] / wall / n if n else None,
        source_fps=None if src is None else src / wall,
        keyframes_per_s=(
            None
            if a.sent.keyframes is None or b.sent.keyframes is None
            else (b.sent.keyframes - a.sent.keyframes) / wall
        ),
        packets_per_s_per_viewer=rx["packets"] / wall / n if n else None,
        frames_delivered=ratio(rx["frames"], frames_sent) if n else None,
        bytes_delivered=ratio(rx["bytes"], delta(b.sent.bytes, a.sent.bytes)) if n else None,
        packets_delivered=(
            ratio(rx["packets"], delta(b.sent.packets, a.sent.packets)) if n else None
        ),
        packets_lost=rx["lost"],
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
        # The capture child only: it encodes the ladder once whatever N is.
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
        f"machine {row.machine_busy_pct:.0f}% busy"
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
    return v is not None and HEALTHY_DELIVERY <= v <= 2 - HEALTHY_DELIVERY


def naive_reference(rows: list[Row]) -> Row | None:
    """Naive per-viewer cost at its largest N that still delivered every frame.

    Larger N amortizes measurement noise best, but once the machine is saturated the
    encoders fall behind, encode fewer frames and look cheaper per viewer than they are.
    """
    naive_rows = [r for r in rows if r.design == "naive" and r.viewers]
    healthy = [r for r in naive_rows if keeps_up(r)] or naive_rows
    return max(healthy, key=lambda r: r.viewers) if healthy else None


def add_ratios(rows: list[Row]) -> Row | None:
    # Full-rate figures on both sides: on a busy machine either design may fall below
    # 30 fps, and a frame not sent is CPU not spent.
    ref = naive_reference(rows)
    if ref is None or ref.cpu_pct_per_viewer_kept_up is None:
        return ref
    for row in rows:
        if row.design == "ours" and row.cpu_pct_per_viewer_kept_up:
            row.naive_over_ours = ref.cpu_pct_per_viewer_kept_up / row.cpu_pct_per_viewer_kept_up
    return ref


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def delivered(row: Row) -> str:
    parts = [
        (label, v)
        for label, v in (
            ("frames", row.frames_delivered),
            ("bytes", row.bytes_delivered),
            ("packets", row.packets_delivered),
        )
        if v is not None
    ]
    return ", ".join(f"{label} {100 * v:.1f}%" for label, v in parts) or "-"


HEADER = [
    "design",
    "N",
    "server CPU %",
    "CPU %/viewer",
    "CPU %/viewer if kept up",
    "capture CPU %",
    "receivers CPU %",
    "other procs CPU %",
    "machine busy %",
    "kbit/s/viewer",
    "source fps",
    "fps/viewer",
    "delivered (rx/tx)",
    "naive/ours per viewer",
]


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [
        [
            r.design,
            str(r.viewers) + ("" if r.connected == r.viewers else f" ({r.connected} up)"),
            pct(r.server_cpu_pct),
            pct(r.cpu_pct_per_viewer, 2),
            pct(r.cpu_pct_per_viewer_kept_up, 2),
            pct(r.capture_cpu_pct),
            pct(r.receivers_cpu_pct),
            pct(r.others_cpu_pct),
            pct(r.machine_busy_pct, 0),
            pct(r.kbit_per_viewer, 0),
            pct(r.source_fps),
            pct(r.fps_per_viewer),
            delivered(r),
            "-" if r.naive_over_ours is None else f"{r.naive_over_ours:.1f}x",
        ]
        for r in rows
    ]


def markdown(rows: list[Row], notes: list[str]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(["# Fan-out cost", "", *lines, "", *[f"- {n}" for n in notes], ""])


def plain(rows: list[Row]) -> str:
    body = [HEADER, *table_rows(rows)]
    widths = [max(len(r[i]) for r in body) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for design, colour in (("ours", "tab:blue"), ("naive", "tab:red")):
        mine = [r for r in rows if r.design == design]
        if not mine:
            continue
        label = "ours (server process)" if design == "ours" else "naive (1 encoder/viewer)"
        left.plot(
            [r.viewers for r in mine],
            [r.server_cpu_pct for r in mine],
            "o-",
            color=colour,
            label=label,
        )
        per = [
            (r.viewers, r.cpu_pct_per_viewer_kept_up, r)
            for r in mine
            if r.cpu_pct_per_viewer_kept_up is not None
        ]
        right.plot([x for x, _, _ in per], [y for _, y, _ in per], "-", color=colour, label=design)
        for x, y, r in per:
            ok = keeps_up(r)
            # Hollow marker: the server fell behind (scaled figure, less certain).
            right.plot([x], [y], "o", color=colour, markerfacecolor=colour if ok else "white")
            right.annotate(
                f"{y:.2f}" + ("" if ok else " (starved)"),
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        if design == "ours":
            left.plot(
                [r.viewers for r in mine],
                [r.capture_cpu_pct for r in mine],
                "s--",
                color="tab:gray",
                label="ours capture (encodes ladder once)",
            )
    left.set(xlabel="viewers", ylabel="CPU % of one core", title="Server CPU vs viewers")
    right.set(
        xlabel="viewers",
        ylabel="CPU % of one core per viewer (if kept up)",
        yscale="log",
        title="Marginal server CPU per viewer",
    )
    # Plain numbers on the log axis: "1.5" reads better than "1.5 x 10^0".
    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(NullFormatter())
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows: list[Row], notes: list[str], meta: dict[str, Any]) -> None:
    OUT.mkdir(exist_ok=True)
    data = {**meta, "rows": [asdict(r) for r in rows], "notes": notes}
    (OUT / "fanout.json").write_text(json.dumps(data, indent=2) + "\n")
    (OUT / "fanout.md").write_text(markdown(rows, notes))
    plot(rows, OUT / "fanout.png")


def make_notes(
    args: argparse.Namespace, ref: Row | None, rows: list[Row], elapsed: float
) -> list[str]:
    notes = [
        f"command: {' '.join(['python', *sys.argv])}; ran {elapsed:.0f}s on "
        f"{psutil.cpu_count()} cores; {args.seconds:g}s window after {args.settle:g}s settle",
        "CPU % is of ONE core (user+system CPU time / wall time); 'server' = the server "
        "process only. Ours' capture child (encodes 720p/360p/180p once) is a separate column.",
        "CPU %/viewer = (server CPU % at N - server CPU % at N=0) / N.",
        f"ours: every viewer pinned to {args.rung} through the WHEP layer link. "
        "Delivery compares encoded frames/bytes the receivers reassembled with /metrics "
        "frames/bytes_out (its /metrics has no RTP packet counter).",
        "naive: aiortc MediaRelay of one 640x360 30 fps test-pattern track, VP8 encoded "
        "per viewer by aiortc (bitrate follows aiortc's own REMB logic, 250k-1.5M). "
        f"N capped at {max(args.naive_viewers, default=0)}: at ~10% of a core per viewer it "
        f"saturates this {psutil.cpu_count()}-core machine. Delivery: frames vs source "
        "frames x N, RTP packets received vs senders' packetsSent.",
        "receivers run in separate processes, do not decode (aiortc decoder replaced by a "
        "counting sink in the receiver processes only) and share the machine with the server.",
    ]
    if ref is not None and ref.cpu_pct_per_viewer_kept_up is not None:
        notes.append(
            "'if kept up' divides CPU %/viewer by the share of handed-out frames "
            "the receivers got (a server that falls behind sends less and looks "
            "cheaper). naive/ours = naive's 'if kept up' cost at N="
            f"{ref.viewers} ({ref.cpu_pct_per_viewer_kept_up:.2f}% of a core; its "
            f"largest N that delivered {100 * HEALTHY_DELIVERY:.0f}-"
            f"{200 - 100 * HEALTHY_DELIVERY:.0f}% of frames) / ours' 'if kept up' cost."
        )
    return notes + warnings(rows)


def warnings(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.viewers and r.connected < r.viewers:
            out.append(f"WARNING {r.design} N={r.viewers}: only {r.connected} connected")
        if r.others_cpu_pct > 20:
            out.append(
                f"WARNING {r.design} N={r.viewers}: {r.others_cpu_pct:.0f}% of a core "
                "used by processes not started by this benchmark (shared machine)"
            )
        if r.machine_busy_pct > 90:
            out.append(
                f"WARNING {r.design} N={r.viewers}: machine {r.machine_busy_pct:.0f}% "
                "busy, figures are CPU-bound"
            )
        if r.source_fps is not None and r.source_fps < HEALTHY_DELIVERY * NOMINAL_FPS:
            out.append(
                f"WARNING {r.design} N={r.viewers}: source ran at {r.source_fps:.1f} "
                "fps (capture starved of CPU; its CPU % is understated)"
            )
        for label, v in (("frames", r.frames_delivered), ("packets", r.packets_delivered)):
            if v is not None and not HEALTHY_DELIVERY <= v <= 2 - HEALTHY_DELIVERY:
                out.append(
                    f"WARNING {r.design} N={r.viewers}: {label} delivered "
                    f"{100 * v:.1f}% of sent (server fell behind: CPU-starved)"
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
    p.add_argument("--viewers", type=counts, default=[1, 10, 50], help="ours: N list")
    p.add_argument(
        "--naive-viewers",
        type=counts,
        default=[1, 5, 10],
        help="naive baseline: N list (keep small: ~10%% of a core per viewer)",
    )
    p.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    p.add_argument("--settle", type=float, default=3.0, help="wait after viewers connect")
    p.add_argument("--rung", default="360p", help="rung every ours-viewer is pinned to")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument(
        "--time-limit",
        type=float,
        default=480.0,
        help="abort (and clean up) after this many seconds",
    )
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> list[Row]:
    # SIGTERM would otherwise end us on the spot and leave servers and viewers running:
    # turn it into a cancellation so every ``finally`` stops what it started.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    rows = await run_design(ours(args.rung), args.viewers, args.settle, args.seconds)
    if not args.skip_naive and args.naive_viewers:
        rows += await run_design(naive(), args.naive_viewers, args.settle, args.seconds)
    return rows


def last_resort_cleanup() -> None:
    """Anything we started that is somehow still alive: SIGKILL it by pid."""
    for pid in STARTED:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).is_running():
                kill_tree(pid)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    for name in ("fanout-ours-server.log", "fanout-naive-server.log", "fanout-receivers.log"):
        (OUT / name).unlink(missing_ok=True)
    started = time.monotonic()
    when = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        rows = asyncio.run(asyncio.wait_for(run(args), args.time_limit))
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
    notes = make_notes(args, ref, rows, elapsed)
    write_outputs(
        rows,
        notes,
        {
            "started": when,
            "elapsed_s": round(elapsed, 1),
            "cpus": psutil.cpu_count(),
            "args": vars(args),
        },
    )
    print(plain(rows))
    print()
    print("\n".join(f"- {n}" for n in notes))
    print(f"\nwrote {OUT / 'fanout.json'}, {OUT / 'fanout.md'}, {OUT / 'fanout.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
