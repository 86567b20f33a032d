"""squall.common.recent_ids: a fence remembers the most recent ids, each once, and no more."""

from __future__ import annotations

from squall.common.recent_ids import RecentIds


def test_the_oldest_id_is_forgotten_past_the_limit_and_adding_again_takes_no_room() -> None:
    fence = RecentIds(limit=3)
    for item in ("a", "b", "c", "b"):
        fence.add(item)
    assert len(fence) == 3
    fence.add("d")  # "a" goes, "b" (added twice) is still there
    assert "a" not in fence and all(i in fence for i in "bcd")
    fence.clear()
    assert len(fence) == 0 and "d" not in fence
