"""squall.services.scheduler.membership and the scheduler's hung reports, without sockets: once an
executor's watch connection is up, heartbeat silence is never a death, only, past hung_timeout,
a report naming its work, cleared once its beats say that it (and its loop) goes again."""

from __future__ import annotations

from squall.common.core import Log
from squall.common.protocol import Heartbeat, RegisterExecutor
from squall.common.settings import Settings
from squall.services.scheduler.events import ExecutorConnected
from squall.services.scheduler.membership import Membership

from tests.unit.scheduler_runs import checked, logs, receive, sends, status, submit, tick


def registration(eid: str, incarnation: int = 1) -> RegisterExecutor:
    return RegisterExecutor(executor_id=eid, incarnation=f"{eid}-{incarnation}", data_address=f"tcp://{eid}:1", slots=1)


def members() -> Membership:
    return Membership(death_timeout=0.4, hung_timeout=2.0)


def test_before_its_watch_connection_is_up_heartbeat_silence_is_death() -> None:
    m = members()
    m.add(b"e1", registration("e1"), now=0.0)
    assert m.expired(0.4) == []
    assert m.expired(0.5) == [("e1", 0.5)]


def test_before_its_watch_connection_is_up_a_joining_executor_has_the_join_timeout_to_beat() -> None:
    m = Membership(death_timeout=0.4, hung_timeout=2.0, join_timeout=5.0)
    m.add(b"e1", registration("e1"), now=0.0)
    assert m.expired(2.0) == []  # slow to beat while many executors start: not dead yet
    assert m.expired(5.5) == [("e1", 5.5)]


def test_the_scheduler_gives_joining_executors_the_join_timeout_setting() -> None:
    assert checked(Settings(join_timeout=7.0)).members.join_timeout == 7.0
    assert checked(Settings(join_timeout=0.1)).members.join_timeout == 0.4  # never below the death timeout


def test_once_its_watch_connection_is_up_silence_is_never_death_only_hung_once() -> None:
    m = members()
    record = m.add(b"e1", registration("e1"), now=0.0)
    m.connected("e1", record.joined)
    assert record.connected
    assert m.expired(1000.0) == []
    assert m.newly_hung(1.9) == []
    assert m.newly_hung(2.5) == [(record, 2.5)]
    record.hung = "batch 3 of run r"
    assert m.newly_hung(3.0) == []  # reported once, not at every tick
    assert m.beat(Heartbeat(executor_id="e1", incarnation="e1-1"), 3.0) is record and record.last_seen == 3.0


def test_an_executor_whose_beats_say_its_loop_is_stuck_is_hung_until_they_say_it_goes_again() -> None:
    m = members()
    record = m.add(b"e1", registration("e1"), now=0.0)
    m.connected("e1", record.joined)
    m.beat(Heartbeat(executor_id="e1", incarnation="e1-1", loop_silent=1.0), 2.0)  # the heartbeat thread beats; the loop is stuck
    assert m.newly_hung(2.5) == []
    m.beat(Heartbeat(executor_id="e1", incarnation="e1-1", loop_silent=2.5), 3.5)
    assert m.newly_hung(3.5) == [(record, 2.5)]
    assert m.is_hung(record, 3.5)
    m.beat(Heartbeat(executor_id="e1", incarnation="e1-1", loop_silent=0.01), 3.6)
    assert not m.is_hung(record, 3.6) and round(record.silent_for(3.6), 3) == 0.01


def test_a_connection_event_of_an_earlier_admission_changes_nothing() -> None:
    m = members()
    first = m.add(b"e1", registration("e1"), now=0.0)
    m.remove("e1")
    second = m.add(b"e1", registration("e1"), now=1.0)  # back after a partition: same process, same address
    assert second.joined != first.joined
    assert m.watched() == {"e1": ("tcp://e1:1", second.joined)}  # the watch makes a new connection for it
    m.connected("e1", first.joined)
    assert not second.connected and m.expired(1.5) == [("e1", 0.5)]
    m.connected("e1", second.joined)
    assert second.connected and m.expired(1.5) == []


def test_beats_from_an_unknown_process_are_refused() -> None:
    m = members()
    m.add(b"e1", registration("e1"), now=0.0)
    assert m.beat(Heartbeat(executor_id="e1", incarnation="e1-2"), 0.1) is None
    assert m.beat(Heartbeat(executor_id="ghost", incarnation="ghost-1"), 0.1) is None


def test_status_shows_silence_and_what_a_hung_executor_runs() -> None:
    m = members()
    record = m.add(b"e1", registration("e1"), now=0.0)
    record.hung = "batch 3 of run r"
    (info,) = m.status(running_jobs=1, now=2.5).executors
    assert (info.silent_for, info.hung) == (2.5, "batch 3 of run r")


def test_the_scheduler_reports_a_hung_executor_with_its_work_and_fails_nothing() -> None:
    s = checked(Settings(heartbeat_interval=0.1, heartbeat_misses=4, hung_timeout=2.0, shuffle_meta_address="tcp://meta:1"))
    for eid in ("e0", "e1"):
        receive(s, registration(eid), 0.0, peer=eid.encode())
        s.handle(ExecutorConnected(executor_id=eid, joined=s.executors[eid].joined, now=0.0))
    submit(s, jobs=1, group_size=1)
    receive(s, Heartbeat(executor_id="e0", incarnation="e0-1"), 2.0, peer=b"e0")
    actions = tick(s, 2.5)
    assert set(s.executors) == {"e0", "e1"} and not sends(actions) and not logs(actions, "executor_lost")
    (hung,) = logs(actions)
    assert (hung.level, hung.event, hung.fields["executor"]) == ("warning", "executor_hung", "e1")
    running = hung.fields["running"]
    assert isinstance(running, str) and "batch 0 of run r (job r.0, stages [" in running, running
    assert s.executors["e1"].hung == running
    assert status(s, 2.5).executors[1].hung == running
    assert tick(s, 3.0) == []  # reported once
    stuck_loop = Heartbeat(executor_id="e1", incarnation="e1-1", loop_silent=3.0)
    assert receive(s, stuck_loop, 3.0, peer=b"e1") == []  # beating, but its loop is still stuck
    again = receive(s, Heartbeat(executor_id="e1", incarnation="e1-1"), 3.1, peer=b"e1")
    assert again == [Log("info", "executor_beating_again", {"executor": "e1", "was_running": running})]
    assert s.executors["e1"].hung == ""
