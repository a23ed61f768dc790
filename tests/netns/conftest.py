"""Network-namespace tests need root, iproute2 (`ip`, `tc`) and nftables (`nft`).

Elsewhere they skip; under CI (env CI set) a missing prerequisite FAILS instead, so a
runner image that lost a package cannot turn this suite into silent skips.
"""

from __future__ import annotations

import os
import shutil

import pytest

TOOLS = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, tc and nft need CAP_NET_ADMIN)")
    for tool, package in TOOLS.items():
        if shutil.which(tool, path=SEARCH_PATH) is None:
            missing.append(f"`{tool}` (apt-get install -y {package})")
    return missing


@pytest.fixture(autouse=True)
def _netns_prerequisites() -> None:
    # A fixture rather than collect_ignore: the tests stay visible (as skips or failures)
    # instead of vanishing from the report.
    missing = missing_prerequisites()
    if not missing:
        return
    message = "netns tests need " + ", ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: refusing to skip)", pytrace=False)
    pytest.skip(message)
