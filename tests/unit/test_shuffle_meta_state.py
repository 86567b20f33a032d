"""squall.services.shuffle_meta.state: map output registry with waiting look-ups and deadlines."""

from __future__ import annotations

from squall.common import protocol
from squall.common.core import Event, Received, Send, Tick
from squall.common.protocol import ErrorReply, LookupMapOutputs, MapLocation, MapOutputs
from squall.services.shuffle_meta.state import ShuffleMetaState


class CheckedShuffleMetaState(ShuffleMetaState):
    """Validates its invariants after every event."""

    def handle(self, event: Event) -> list[Send]:
        sends = super().handle(event)
        self.validate()
        return sends


def checked() -> ShuffleMetaState:
    return CheckedShuffleMetaState()


def receive(s: ShuffleMetaState, msg: protocol.Message, now: float = 0.0, peer: bytes = b"executor") -> list[Send]:
    return s.handle(Received(msg=msg, peer=peer, now=now))


def register(s: ShuffleMetaState, job_id: str, shuffle_id: int, location: MapLocation) -> list[Send]:
    return receive(s, protocol.RegisterMapOutputs(outputs=[protocol.MapOutput(job_id=job_id, shuffle_id=shuffle_id, location=location)]))


def ask(s: ShuffleMetaState, peer: bytes, request: LookupMapOutputs, now: float) -> list[Send]:
    return receive(s, request, now, peer=peer)


def tick(s: ShuffleMetaState, now: float) -> list[Send]:
    return s.handle(Tick(now=now))


def forget_job(s: ShuffleMetaState, job_id: str) -> list[Send]:
    return receive(s, protocol.ForgetJob(job_ids=[job_id]), peer=b"scheduler")


def forget_executor(s: ShuffleMetaState, executor_id: str) -> list[Send]:
    return receive(s, protocol.ForgetExecutor(executor_id=executor_id), peer=b"scheduler")


def loc(part: int, executor_id: str = "e1") -> MapLocation:
    return MapLocation(map_partition=part, executor_id=executor_id, address=f"tcp://{executor_id}:1", sizes=[part, 1])


def lookup(request_id: int = 1, expected: int = 3, job_id: str = "j", shuffle_id: int = 4, timeout: float = 2.0):
    return LookupMapOutputs(request_id=request_id, job_id=job_id, shuffle_id=shuffle_id, expected=expected, timeout=timeout)


def test_lookup_of_a_complete_shuffle_is_answered_at_once_in_partition_order():
    s = checked()
    for part, eid in [(2, "e2"), (0, "e1"), (1, "e3")]:
        assert register(s, "j", 4, loc(part, eid)) == []
    replies = ask(s, b"reducer", lookup(request_id=9), 0.0)
    assert replies == [Send(b"reducer", MapOutputs(request_id=9, locations=[loc(0, "e1"), loc(1, "e3"), loc(2, "e2")]))]
    assert not s.waiters


def test_shuffles_and_jobs_are_kept_apart():
    s = checked()
    register(s, "j", 4, loc(0))
    register(s, "j", 5, loc(1))
    register(s, "k", 4, loc(2))
    assert ask(s, b"r", lookup(expected=2), 0.0) == []  # only one output of (j, 4)


def test_early_lookup_waits_and_is_answered_by_the_last_registration():
    s = checked()
    register(s, "j", 4, loc(0))
    assert ask(s, b"r1", lookup(request_id=1, expected=3), 0.0) == []
    assert ask(s, b"r2", lookup(request_id=2, expected=3), 0.0) == []
    assert register(s, "j", 4, loc(1)) == []
    replies = register(s, "j", 4, loc(2, "e2"))
    assert {r.peer for r in replies} == {b"r1", b"r2"}
    for r in replies:
        assert isinstance(r.msg, MapOutputs)
        assert [l.map_partition for l in r.msg.locations] == [0, 1, 2]
    assert {r.msg.request_id for r in replies} == {1, 2}
    assert not s.waiters
    assert tick(s, 100.0) == []  # nothing left to time out


def test_waiters_with_different_expectations_are_answered_separately():
    s = checked()
    ask(s, b"small", lookup(request_id=1, expected=1), 0.0)
    ask(s, b"big", lookup(request_id=2, expected=2), 0.0)
    first = register(s, "j", 4, loc(0))
    assert [r.peer for r in first] == [b"small"]
    second = register(s, "j", 4, loc(1))
    assert [r.peer for r in second] == [b"big"]


def test_reregistration_of_a_partition_does_not_count_twice():
    s = checked()
    ask(s, b"r", lookup(expected=2), 0.0)
    assert register(s, "j", 4, loc(0, "e1")) == []
    assert register(s, "j", 4, loc(0, "e2")) == []
    replies = register(s, "j", 4, loc(1))
    assert [l.executor_id for l in replies[0].msg.locations] == ["e2", "e1"]


def test_tick_after_the_deadline_answers_with_an_error():
    s = checked()
    register(s, "j", 4, loc(0))
    ask(s, b"r", lookup(request_id=17, expected=3, timeout=2.0), 10.0)
    assert tick(s, 11.9) == []
    replies = tick(s, 12.0)
    assert len(replies) == 1 and replies[0].peer == b"r"
    err = replies[0].msg
    assert isinstance(err, ErrorReply) and err.request_id == 17
    assert "1 of 3" in err.reason and "job j shuffle 4" in err.reason
    assert not s.waiters
    assert register(s, "j", 4, loc(1)) == [] and register(s, "j", 4, loc(2)) == []  # no longer waiting


def test_tick_only_expires_due_waiters():
    s = checked()
    ask(s, b"early", lookup(request_id=1, timeout=1.0), 0.0)
    ask(s, b"late", lookup(request_id=2, timeout=5.0), 0.0)
    assert [r.peer for r in tick(s, 2.0)] == [b"early"]
    assert len(s.waiters[("j", 4)]) == 1


def test_forget_job_answers_waiters_with_an_error_and_drops_outputs():
    s = checked()
    register(s, "j", 4, loc(0))
    register(s, "other", 4, loc(0))
    ask(s, b"r", lookup(request_id=3, expected=2), 0.0)
    replies = forget_job(s, "j")
    assert len(replies) == 1 and replies[0].peer == b"r"
    assert isinstance(replies[0].msg, ErrorReply) and replies[0].msg.request_id == 3
    assert "job j is over" in replies[0].msg.reason
    assert ("j", 4) not in s.outputs and ("other", 4) in s.outputs
    assert not s.waiters
    assert tick(s, 100.0) == []


def test_forget_executor_removes_its_outputs():
    s = checked()
    register(s, "j", 4, loc(0, "dead"))
    register(s, "j", 4, loc(1, "alive"))
    register(s, "k", 1, loc(0, "dead"))
    forget_executor(s, "dead")
    assert list(s.outputs[("j", 4)]) == [1]
    assert s.outputs[("k", 1)] == {}
    assert ask(s, b"r", lookup(expected=2), 0.0) == []  # incomplete again: waits
    replies = register(s, "j", 4, loc(0, "replacement"))
    assert [l.executor_id for l in replies[0].msg.locations] == ["replacement", "alive"]


def test_a_registration_arriving_after_its_job_was_forgotten_is_ignored():
    s = checked()
    register(s, "j", 4, loc(0))
    forget_job(s, "j")
    register(s, "j", 4, loc(1))  # overtaken by ForgetJob on another socket
    assert s.outputs == {}
    register(s, "k", 4, loc(0))
    assert ("k", 4) in s.outputs


def test_ping_and_tracked_are_answered_through_handle():
    s = checked()
    register(s, "j", 4, loc(0))
    assert receive(s, protocol.Ping(nonce=7), peer=b"probe") == [Send(b"probe", protocol.Pong(nonce=7, service="shuffle_meta"))]
    (reply,) = receive(s, protocol.GetTracked(), peer=b"probe")
    assert reply.peer == b"probe" and reply.msg.sizes == {"outputs": 1, "waiters": 0, "forgotten": 0, "persisted_datasets": 0,
                                                           "persisted_blocks": 0, "persisted_executors": 0, "persisted_forgotten": 0}
