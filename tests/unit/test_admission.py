"""Admission of new viewers: per-IP offer rate, capacity, the shutdown gate."""

from __future__ import annotations

from broadcaster.config import LimitsConfig
from broadcaster.server import admission as admission_module
from broadcaster.server.admission import Admission, OfferRate


def test_offer_rate_allows_a_burst_then_refills_per_ip() -> None:
    rate = OfferRate(per_minute=3)
    assert [rate.take("10.0.0.1", 0.0) for _ in range(3)] == [None, None, None]
    wait = rate.take("10.0.0.1", 0.0)
    assert wait is not None and 19 < wait <= 20  # one offer per 20 s
    assert rate.take("10.0.0.2", 0.0) is None  # another address is not affected
    assert rate.take("10.0.0.1", 20.0) is None
    assert rate.take("10.0.0.1", 20.0) is not None


def test_zero_means_unlimited() -> None:
    rate = OfferRate(per_minute=0)
    assert all(rate.take("10.0.0.1", 0.0) is None for _ in range(1000))
    assert len(rate) == 0


def test_ip_table_stays_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(admission_module, "MAX_TRACKED_IPS", 100)
    rate = OfferRate(per_minute=5)
    for i in range(1000):
        rate.take(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(rate) <= 100
    # Busy addresses too: even when nobody is idle the table does not grow.
    for i in range(1000):
        for _ in range(5):
            rate.take(f"10.1.{i // 256}.{i % 256}", 5000.0)
    assert len(rate) <= 100


def test_capacity_and_draining() -> None:
    adm = Admission(LimitsConfig(max_viewers=2, retry_after=7, offers_per_minute=2))
    assert adm.check_capacity(1) is None
    full = adm.check_capacity(2)
    assert full is not None and (full.status, full.retry_after) == (503, 7)
    assert "limit" in full.reason
    assert adm.check_rate("1.2.3.4", 0.0) is None and adm.check_rate("1.2.3.4", 0.0) is None
    limited = adm.check_rate("1.2.3.4", 0.0)
    assert limited is not None and limited.status == 429 and limited.retry_after == 30
    adm.draining = True
    drained = adm.check_capacity(0)
    assert drained is not None and drained.status == 503 and "shutting down" in drained.reason
    assert adm.refused == {429: 1, 503: 2}


def test_max_viewers_zero_is_unlimited() -> None:
    assert Admission(LimitsConfig(max_viewers=0)).check_capacity(10**6) is None
