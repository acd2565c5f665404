"""The hot loops' GC settings: frozen start-up state, raised thresholds, an opt-out."""

from __future__ import annotations

import gc

from shardex.node.runtime import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_start_up_objects_and_raises_thresholds(monkeypatch):
    before = gc.get_threshold()
    monkeypatch.delenv("SHARDEX_GC", raising=False)
    book = [{"order": i} for i in range(1000)]  # long-lived state built at start-up
    try:
        assert tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() >= len(book)
        # cycles are still collected (later, not never)
        a: list = []
        a.append(a)
        del a
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_shardex_gc_default_keeps_pythons_settings(monkeypatch):
    before = gc.get_threshold()
    monkeypatch.setenv("SHARDEX_GC", "default")
    assert not tune_gc()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
