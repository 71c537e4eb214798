"""The object-store reading a run records per round (resources.parquet: object_store_bytes)."""

from __future__ import annotations

import time

import numpy as np

from fedsim.engine.memory import object_store_bytes

MB = 1024**2


def _reading(until=None, steady: float = 1.5, timeout: float = 15.0) -> int:
    """object_store_bytes() once it satisfies `until`, or (without `until`) once it has stayed the
    same for `steady` seconds: Ray's resource view lags the stores by about a second, so a bare
    first reading could still count objects an earlier test has just freed."""
    deadline = time.monotonic() + timeout
    reading, since = object_store_bytes(), time.monotonic()
    while time.monotonic() < deadline:
        if until is not None and until(reading):
            return reading
        if until is None and time.monotonic() - since >= steady:
            return reading
        time.sleep(0.05)
        latest = object_store_bytes()
        if latest != reading:
            reading, since = latest, time.monotonic()
    return reading


def test_object_store_reading_grows_by_a_put_and_shrinks_by_its_release(ray_cluster) -> None:
    array = np.ones(100 * MB // 8)  # 100 MB, far above Ray's inline limit: it goes to the store
    before = _reading()
    ref = ray_cluster.put(array)
    during = _reading(until=lambda reading: reading - before >= array.nbytes)
    print(f"object_store_bytes: before {before}, with a {array.nbytes}-byte array {during}", end="")
    assert array.nbytes <= during - before < array.nbytes + MB, (before, during)
    del ref
    after = _reading(until=lambda reading: during - reading >= array.nbytes)
    print(f", released {after}")
    assert during - MB < after + array.nbytes <= during, (before, during, after)
