"""Audio end to end: the capture's one Opus encoding reaches a real aiortc viewer over
ICE/DTLS/SRTP, decodes, and carries the test tone's beep once a second."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
import pytest_asyncio
from serve_process import running_service
from whep_client import WhepViewer

from broadcaster.config import load_config
from broadcaster.server.service import Service

pytestmark = pytest.mark.asyncio(loop_scope="module")

SAMPLE_RATE = 48_000
LOUD = 4000  # the beep is at half scale (16383); silence decodes to near 0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service() -> AsyncIterator[Service]:
    async with running_service(load_config(None).with_server(port=0)) as svc:
        yield svc


def beep_onsets(pcm: np.ndarray) -> list[int]:
    """Sample indices where a beep starts (loud after at least 0.5 s of quiet)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
    if not len(loud):
        return []
    # A beep cut by the start of the recording is not an onset.
    starts = [int(loud[0])] if loud[0] > SAMPLE_RATE // 2 else []
    for prev, cur in zip(loud[:-1], loud[1:], strict=True):
        if cur - prev > SAMPLE_RATE // 2:
            starts.append(int(cur))
    return starts


async def test_viewer_decodes_the_tone_with_a_beep_every_second(
    service: Service, http: aiohttp.ClientSession
) -> None:
    viewer = WhepViewer(service.url)
    await viewer.connect(http, audio=True)
    assert service.broadcast is not None and service.broadcast.audio
    chunks = []
    timestamps = []
    while sum(len(c) for c in chunks) < 4.5 * SAMPLE_RATE:
        frame = await viewer.audio_frame(timeout=10)
        assert frame.sample_rate == SAMPLE_RATE
        pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        chunks.append(pcm)
        timestamps.append(frame.pts)
    async with http.get(service.url + "healthz") as resp:
        assert (await resp.json())["audio"] == "live"
    async with http.get(service.url + "metrics") as resp:
        metrics = await resp.text()
    sent = re.search(r"^broadcaster_audio_packets_sent_total (\d+)$", metrics, re.M)
    assert sent is not None and int(sent.group(1)) >= len(timestamps)
    await viewer.close(http)
    # One Opus frame per 20 ms, with no gaps: consecutive RTP timestamps.
    steps = np.diff(timestamps)
    assert np.median(steps) == 960
    assert np.mean(steps == 960) > 0.95, steps
    pcm = np.concatenate(chunks)
    onsets = beep_onsets(pcm)
    assert len(onsets) >= 3, onsets
    periods = np.diff(onsets) / SAMPLE_RATE
    # A mark starts at the first frame of each capture second: 1 s apart, +- a frame
    # (two when a starved capture loop skips one).
    assert abs(float(np.median(periods)) - 1.0) < 0.035, periods
    assert np.all(np.abs(periods - 1.0) < 0.070), periods
    # Each beep lasts 100 ms and is a 1 kHz tone (about 200 zero crossings a second).
    beep = pcm[onsets[1] : onsets[1] + SAMPLE_RATE // 10].astype(np.int32)
    assert np.mean(np.abs(beep) > LOUD / 4) > 0.6
    crossings = np.count_nonzero(np.diff(np.sign(beep)) != 0)
    assert 180 <= crossings <= 220, crossings
    quiet = pcm[onsets[1] + SAMPLE_RATE // 5 : onsets[1] + SAMPLE_RATE // 2]
    assert np.max(np.abs(quiet.astype(np.int32))) < LOUD / 4


async def test_answer_carries_one_sendonly_opus_audio_line(
    service: Service, http: aiohttp.ClientSession
) -> None:
    viewer = WhepViewer(service.url)
    await viewer.connect(http, audio=True)
    answer = viewer.pc.remoteDescription.sdp
    await viewer.close(http)
    audio = answer[answer.index("m=audio") :]
    audio = audio[: audio.index("m=video")] if "m=video" in audio else audio
    assert "a=sendonly" in audio
    rtpmaps = [line for line in audio.splitlines() if line.startswith("a=rtpmap:")]
    assert rtpmaps and all("opus/48000" in line for line in rtpmaps), rtpmaps


async def test_broadcast_without_sound_answers_audio_inactive(
    http: aiohttp.ClientSession,
) -> None:
    async with running_service(load_config(None).with_server(port=0).with_audio("none")) as svc:
        viewer = WhepViewer(svc.url)
        await viewer.connect(http, audio=True)
        answer = viewer.pc.remoteDescription.sdp
        frame = await viewer.frame(timeout=15)  # video plays as ever
        assert frame.width == 1280
        async with http.get(svc.url + "healthz") as resp:
            assert (await resp.json())["audio"] == "off"
        await viewer.close(http)
    audio = answer[answer.index("m=audio") :]
    assert "a=inactive" in audio.split("m=video")[0]


async def record(viewer: WhepViewer, seconds: float) -> np.ndarray:
    chunks = []
    while sum(len(c) for c in chunks) < seconds * SAMPLE_RATE:
        frame = await viewer.audio_frame(timeout=10)
        chunks.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0])
    return np.concatenate(chunks)


async def serve_and_record(
    http: aiohttp.ClientSession, source: str, audio: str | None, seconds: float
) -> np.ndarray:
    config = load_config(None).with_server(port=0).with_audio(audio)
    async with running_service(config, source) as svc:
        viewer = WhepViewer(svc.url)
        await viewer.connect(http, audio=True)
        pcm = await record(viewer, seconds)
        await viewer.close(http)
        return pcm


def write_clip(path: Path) -> None:
    """1 s of 30 fps video with AAC sound: silent, a 1 kHz tone from 0.5 to 0.8 s."""
    rate = 44_100
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=30)
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "mono"
        for n in range(30):
            image = np.full((180, 320, 3), 255 if 15 <= n < 24 else 0, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, 30)
            container.mux(video.encode(frame))
        t = np.arange(rate) / rate
        wave = np.where((t >= 0.5) & (t < 0.8), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
        for start in range(0, rate, 1024):
            chunk = np.ascontiguousarray(wave[None, start : start + 1024], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, "fltp", "mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
        container.mux(video.encode(None))


async def test_file_source_sound_reaches_the_viewer_looping_with_the_file(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    pcm = await serve_and_record(http, f"file:{clip}", None, 4.5)
    onsets = beep_onsets(pcm)
    assert len(onsets) >= 3, onsets
    # The file is 1 s long and loops: its tone comes back every second, 300 ms long.
    periods = np.diff(onsets) / SAMPLE_RATE
    assert np.all(np.abs(periods - 1.0) < 0.05), periods
    loud = np.abs(pcm[onsets[1] : onsets[1] + SAMPLE_RATE // 2].astype(np.int32)) > LOUD / 4
    assert np.mean(loud[: SAMPLE_RATE * 3 // 10]) > 0.25
    assert np.mean(loud[SAMPLE_RATE * 4 // 10 :]) < 0.05


async def test_microphone_input_device_reaches_the_viewer(http: aiohttp.ClientSession) -> None:
    # A machine without a sound card: FFmpeg's lavfi device stands in for the microphone,
    # through the same input-device code path (mic:FORMAT:DEVICE).
    device = "mic:lavfi:sine=frequency=440:sample_rate=48000,arealtime"
    pcm = (await serve_and_record(http, "test", device, 2.0)).astype(np.int32)
    steady = pcm[SAMPLE_RATE // 2 :]
    rising = np.count_nonzero((steady[:-1] < 0) & (steady[1:] >= 0))
    assert abs(rising / (len(steady) / SAMPLE_RATE) - 440) < 20
    assert np.percentile(np.abs(steady), 99) > 3000  # a tone, not silence
