"""The serving process's collector settings (gateway/server.py `settle_gc`)."""

from __future__ import annotations

import gc

from gateway.server import GC_YOUNG_OBJECTS, settle_gc


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
