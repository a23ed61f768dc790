"""Debian's Chromium as the tests and benchmarks launch it (never a downloaded browser)."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

# Quiet and self-contained: no background traffic to Google's hosts (this machine's
# network refuses it), no GPU, autoplay allowed. Callers add --host-resolver-rules for
# their page host and one merged --disable-features list (Chromium keeps only the last).
QUIET_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
    "--autoplay-policy=no-user-gesture-required",
)


def require_chromium() -> None:
    """Skip without Chromium; under CI (where .ci/run installs it) fail instead."""
    import pytest  # here, not at the top: bench/ uses this module outside pytest

    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} not installed (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
