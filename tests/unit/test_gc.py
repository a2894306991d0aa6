"""The serving process's collector settings (gateway/server.py `settle_gc`)."""

from __future__ import annotations

import gc

from gateway.server import GC_YOUNG_OBJECTS, settle_gc
from gateway.telemetry import Metrics
from gateway.telemetry.metrics import GcPauses


def test_settle_gc_freezes_what_is_loaded_and_raises_only_the_first_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 1000  # the modules, descriptors and the rest loaded so far
        assert gc.get_threshold() == (GC_YOUNG_OBJECTS, *before[1:])
        # ordinary garbage is still collected: a cycle made now is found by a pass
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_gc_pauses_count_each_pass_and_its_time_by_generation() -> None:
    pauses = GcPauses()
    pauses.watch()
    pauses.watch()  # once only
    try:
        gc.collect(0)
        gc.collect(2)
        snap = pauses.snapshot()
    finally:
        gc.callbacks.remove(pauses._on_pass)
    assert snap["passes"][0] >= 1 and snap["passes"][2] >= 1  # (others may run meanwhile)
    assert snap["seconds"][2] > 0
    assert pauses._on_pass not in gc.callbacks


def test_gc_passes_are_summed_over_snapshots_on_metrics() -> None:
    from gateway.telemetry.metrics import SnapshotCollector

    worker = {"gc": {"passes": [3, 1, 0], "seconds": [0.25, 0.5, 0.0]}}
    retired = {"gc": {"passes": [1, 0, 2], "seconds": [0.25, 0.0, 1.0]}}
    families = {f.name: f for f in SnapshotCollector(lambda: [worker, retired, {"supervisor": {}}]).collect()}
    passes = {s.labels["generation"]: s.value for s in families["modelgate_gc_passes"].samples}
    paused = {s.labels["generation"]: s.value for s in families["modelgate_gc_pause_seconds"].samples}
    assert passes == {"0": 4, "1": 1, "2": 2}
    assert paused == {"0": 0.5, "1": 0.5, "2": 1.0}
    assert "gc" in Metrics().snapshot()
