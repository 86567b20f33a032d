"""squall.services.executor.inbox: shuffle blocks kept for reducers until claimed, refused once released."""

from __future__ import annotations

from squall.common.recent_ids import FENCE_MEMORY
from squall.services.executor.inbox import ShuffleInbox


def test_blocks_added_before_the_claim_are_in_the_claimed_dict():
    box = ShuffleInbox()
    assert box.add(("j", 1, 0), 2, b"m2")
    assert box.add(("j", 1, 0), 0, b"m0")
    assert box.add(("j", 1, 1), 0, b"other reducer")
    assert box.claim(("j", 1, 0)) == {2: b"m2", 0: b"m0"}


def test_claim_and_add_share_the_same_dict():
    box = ShuffleInbox()
    claimed = box.claim(("j", 1, 0))
    assert claimed == {}
    box.add(("j", 1, 0), 3, b"later")
    assert claimed == {3: b"later"}  # the reducer sees blocks arriving after its claim
    assert box.claim(("j", 1, 0)) is claimed


def test_a_later_block_for_the_same_map_partition_replaces_the_first():
    box = ShuffleInbox()
    box.add(("j", 1, 0), 0, b"first")
    box.add(("j", 1, 0), 0, b"again")
    assert box.claim(("j", 1, 0)) == {0: b"again"}


def test_discard_drops_one_reducers_blocks():
    box = ShuffleInbox()
    box.add(("j", 1, 0), 0, b"a")
    box.add(("j", 1, 1), 0, b"b")
    box.discard(("j", 1, 0))
    box.discard(("never", 0, 0))
    assert box.claim(("j", 1, 0)) == {}
    assert box.claim(("j", 1, 1)) == {0: b"b"}


def test_release_drops_the_jobs_blocks_and_refuses_later_ones():
    box = ShuffleInbox()
    box.add(("j", 1, 0), 0, b"a")
    box.add(("j", 2, 5), 1, b"b")
    box.add(("k", 1, 0), 0, b"kept")
    box.release({"j"})
    assert not box.add(("j", 1, 0), 1, b"late")
    assert box.claim(("j", 1, 0)) == {} and box.claim(("j", 2, 5)) == {}
    assert box.claim(("k", 1, 0)) == {0: b"kept"}
    assert box.add(("k", 1, 0), 1, b"more")  # other jobs are unaffected


def test_memory_of_released_jobs_is_bounded():
    box = ShuffleInbox()
    for i in range(FENCE_MEMORY + 50):
        box.release({f"job-{i}"})
    assert box.tracked()["released"] == FENCE_MEMORY
    assert box.add(("job-0", 0, 0), 0, b"x")  # long forgotten
    assert not box.add((f"job-{FENCE_MEMORY + 49}", 0, 0), 0, b"x")
    assert not box.add(("job-50", 0, 0), 0, b"x")  # the oldest one still remembered
