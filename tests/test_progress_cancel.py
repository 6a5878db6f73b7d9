"""Progress that moves and cancel that cancels: CPU slabs sized by time, not by memory alone.

A CPU reconstruction of 128 rows once ran as one slab: the bar sat at
"starting" for 80 s and a cancel took effect at the end. Slabs are now about
:data:`tomolab.engine.pipeline.CPU_SLAB_SECONDS` of work each.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import tomolab
from tomolab.api import plan_reconstruction
from tomolab.devices import TimedBatches
from tomolab.errors import Cancelled


def _plan(heights: TimedBatches, n_rows: int, seconds_for):
    """Run the planner over ``n_rows`` with slab times from ``seconds_for(index, rows)``."""
    slabs, start = [], 0
    while start < n_rows:
        rows = min(heights.next(), n_rows - start)
        seconds = seconds_for(len(slabs), rows)
        heights.record(rows, seconds)
        slabs.append((rows, seconds))
        start += rows
    return slabs


@pytest.mark.parametrize("per_row", [0.002, 0.04, 0.3, 1.5])
def test_slabs_after_the_first_take_about_the_target_time(per_row):
    heights = TimedBatches(first=3, ceiling=10_000, seconds=0.5)
    slabs = _plan(heights, 2000, lambda i, rows: 2.0 + rows * per_row if i == 0 else rows * per_row)
    # the first slab pays the one-off costs (2 s here), so the second is no shorter; after
    # them no slab runs past the target, unless a single row does
    assert slabs[1][0] >= slabs[0][0]
    assert all(seconds <= max(0.5, per_row) + 1e-9 for _, seconds in slabs[2:])
    # and slabs are not needlessly short once the rate is known (growth at most twofold a slab)
    settled = [rows for rows, _ in slabs[12:-1]]
    fits = max(1, round(0.5 / per_row))
    assert all(fits - 1 <= rows <= fits for rows in settled)


def test_a_slower_machine_gets_shorter_slabs_at_once():
    heights = TimedBatches(first=8, ceiling=64, seconds=0.5)
    slabs = _plan(heights, 200, lambda i, rows: rows * (0.05 if i < 5 else 0.5))  # load arrives
    after = [rows for rows, _ in slabs[6:]]
    assert after and set(after) == {1}
    assert all(rows <= 64 for rows, _ in slabs)


def test_the_memory_ceiling_still_holds():
    heights = TimedBatches(first=1, ceiling=5, seconds=0.5)
    slabs = _plan(heights, 100, lambda i, rows: rows * 1e-4)
    assert max(rows for rows, _ in slabs) == 5


def test_progress_reports_each_slab_of_the_plan():
    # the first slab is 8 rows (0.5 s at the assumed 1e8 updates/s of 240 × 160² a row), the next
    # at most 16: 32 rows take three slabs or more, however fast the machine
    scan = tomolab.data.simulate_scan(160, n_rows=32, n_angles=240, seed=2)
    calls, stats = [], {}
    plan = plan_reconstruction(scan, center=scan.attrs["true_center"], backend="numpy")
    volume = plan.run(progress=lambda done, total: calls.append((done, total)), stats=stats)
    # once when the first slab starts, then after every slab, to the last row
    assert calls[0] == (0, 32) and calls[-1] == (32, 32)
    assert len(calls) == stats["slabs"] + 1
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    # memory alone would allow one slab of 32 rows: time splits it
    assert stats["slabs"] >= 3 and stats["height"] <= 16
    whole = tomolab.reconstruct(scan, center=scan.attrs["true_center"], backend="numpy")
    assert np.array_equal(volume, whole.values)  # slab boundaries leave no trace


@pytest.mark.slow
def test_cancel_takes_effect_within_two_seconds_on_the_cpu():
    # 384 rows of 256² from 600 angles by FBP: 18 s or more on 2 idle cores, about 35 s here
    # (named: the CPU default, gridrec, finishes this in about 5 s, too soon for the check below)
    n_rows = 384
    scan = tomolab.data.simulate_scan(256, n_rows=n_rows, n_angles=600, seed=1)
    center = scan.attrs["true_center"]
    tomolab.reconstruct(scan, center=center, rows="0:1", backend="numpy",
                        algorithm="fbp")  # compiled, cached
    stop = threading.Event()
    reports: list[tuple[float, int]] = []
    outcome: dict = {}

    def work():
        started = time.perf_counter()
        try:
            tomolab.reconstruct(scan, center=center, backend="numpy", algorithm="fbp",
                                cancel=stop.is_set,
                                progress=lambda done, total: reports.append(
                                    (time.perf_counter() - started, done)))
        except Cancelled as exc:
            outcome["cancelled"] = exc
        outcome["ended"] = time.perf_counter()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    time.sleep(0.5)
    pressed = time.perf_counter()
    stop.set()
    thread.join(60)
    assert "cancelled" in outcome, "the reconstruction ran to its end"
    took = outcome["ended"] - pressed
    assert took < 2.0, f"cancel took {took:.2f} s"
    rows_done = reports[-1][1]
    assert 0 <= rows_done < n_rows
    # what was left when Cancel was pressed would have taken well over the 2 s allowed (at the
    # rate measured in this run), so the limit means something on a fast machine too
    rate = max(rows_done, 1) / reports[-1][0] if reports[-1][0] > 0 else float("inf")
    assert (n_rows - rows_done) / rate > 4.0 or rows_done == 0, (rows_done, rate)


def test_centre_sweep_reports_batches_and_cancels():
    scan = tomolab.data.simulate_scan(192, n_rows=2, n_angles=300, seed=4)
    calls = []
    stack = tomolab.sweep_center(scan, backend="numpy",
                                 progress=lambda done, total: calls.append((done, total)))
    total = stack.sizes["center"]
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    # two trial slices first, then at most twice as many a batch: several reports, whatever
    # the machine's speed
    assert len(calls) >= 5
    assert abs(stack.attrs["best_center"] - scan.attrs["true_center"]) <= 0.5
    seen = []
    with pytest.raises(Cancelled, match=f"after 2 of {total} centres"):
        tomolab.sweep_center(scan, backend="numpy", cancel=lambda: len(seen) >= 2,
                             progress=lambda d, t: seen.append(d))
