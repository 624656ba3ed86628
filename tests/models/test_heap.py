"""Garbage-collector settings for scoring processes."""

import gc
import weakref

import pytest

from models.heap import YOUNG_GENERATION_THRESHOLD, freeze_loaded_objects


class Node:
    pass


@pytest.fixture
def collector_state():
    """Restore the collector's thresholds and unfreeze what a test froze."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def cycle() -> weakref.ref:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


@pytest.mark.usefixtures("collector_state")
def test_freeze_moves_live_objects_out():
    gc.set_threshold(700, 10, 10)
    freeze_loaded_objects()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("collector_state")
def test_collect_frees_cycle_frozen_earlier():
    gc.disable()
    try:
        frozen = cycle()
        freeze_loaded_objects(collect=False)
        gc.collect()
        assert frozen() is not None, "a frozen cycle must survive a plain collection"
        freeze_loaded_objects()
        assert frozen() is None
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_state")
def test_higher_threshold_kept():
    gc.set_threshold(50_000, 5, 5)
    freeze_loaded_objects()
    assert gc.get_threshold() == (50_000, 5, 5)


@pytest.mark.usefixtures("collector_state")
def test_disabled_collector_stays_off():
    gc.set_threshold(0, 10, 10)
    freeze_loaded_objects(collect=False)
    assert gc.get_threshold()[0] == 0
