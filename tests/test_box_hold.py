"""A single missed detection never blinks a box off, however slowly results come."""

from __future__ import annotations

from component.box_hold import MIN_HOLD_S, BoxHold


def feed(hold: BoxHold, pattern: str, interval: float) -> list[bool]:
    """`pattern`: one char per result, B (boxes) or - (empty); returns what was ignored."""
    return [hold.ignore_empty(c == "B", i * interval) for i, c in enumerate(pattern)]


def test_one_miss_is_held_at_twenty_results_a_second():
    assert feed(BoxHold(), "BBBB-BBB", 0.05) == [False] * 4 + [True] + [False] * 3


def test_one_miss_is_held_when_results_are_slower_than_the_minimum_hold():
    # 0.4 s between results: a fixed 0.3 s hold would drop the box on this miss.
    assert 0.4 > MIN_HOLD_S
    assert feed(BoxHold(), "BBBB-B", 0.4)[4] is True


def test_a_face_that_left_is_let_go():
    ignored = feed(BoxHold(), "BBBB------", 0.4)
    assert ignored[4] is True and not any(ignored[6:]), ignored
    ignored = feed(BoxHold(), "BBBB" + "-" * 10, 0.05)
    assert ignored[4] is True and not any(ignored[4 + 7:]), ignored  # gone after 0.3 s


def test_no_boxes_yet_holds_nothing():
    assert feed(BoxHold(), "---", 0.1) == [False, False, False]
