"""The scheduler's pure core: events in, instructions out, no sockets (tested without them).

A driver submits a run: a sequence of jobs (micro-batches). In Drizzle mode (pre-scheduled,
drizzle_mode.py) the jobs are dispatched a group at a time, every task of the group placed at
once, and the scheduler is involved only at group boundaries. In BSP mode (bsp_mode.py) each job
runs stage by stage and executors report every task. This module holds what both share: the
executors (membership.py), the runs, the code drivers sent, keyed state (keyed_state.py), and
the drivers the scheduler holds something for.

Every run has a priority ("latency" or "batch", SubmitJobs.priority) that each task it launches
carries to the executors, where latency tasks suspend batch tasks; placement.py orders the
executors each kind of run takes (Settings.lc_placement), from the loads their heartbeats tell.

A task failure fails its job with a clear reason; the run's other jobs, later groups and the
cluster go on. When an executor dies, a pre-scheduled run replays its unfinished jobs on the
survivors; a BSP job that loses an executor fails.

One entry: `handle(event)`, through one dispatch table keyed by the message type of a Received
event and by the event type otherwise. `validate()` checks the invariants of the tables (tests
call it after every event).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Any, cast

import msgspec
from squall.common.core import Event, Log, Received, Send, Tick, ToShuffleMeta
from squall.common.plan import JobPlan, PlanError, StageSpec
from squall.common.protocol import (
    CancelRun,
    Decommission,
    ErrorReply,
    FailureKind,
    ForgetExecutor,
    ForgetJob,
    ForgetPersisted,
    ForgetStates,
    GetClusterStatus,
    GetMetrics,
    GetSnapshot,
    GetTracked,
    GroupDone,
    Heartbeat,
    JobDone,
    JobFailed,
    Message,
    Metrics,
    PersistedLocations,
    Ping,
    Pong,
    PruneCheckpoints,
    Registered,
    RegisterExecutor,
    ReleaseJob,
    Reregister,
    ResultPartition,
    RunDone,
    Snapshot,
    StateCheckpointed,
    StreamProgress,
    SubmitJobs,
    TaskFailed,
    TaskFinished,
)
from squall.common.settings import Settings
from squall.common.tracked import tracked_reply
from squall.services.scheduler.bsp_jobs import BspJob
from squall.services.scheduler.bsp_mode import BspMode
from squall.services.scheduler.cancellation import stop_run
from squall.services.scheduler.decommission import Departures
from squall.services.scheduler.direct_results import reachable_result_address
from squall.services.scheduler.drizzle_mode import GROUPS_IN_FLIGHT, DrizzleMode
from squall.services.scheduler.events import (
    ConnectionDropped,
    DriversGone,
    ExecutorConnected,
    ExecutorDisconnected,
    Instruction,
    ProbeDrivers,
    WatchExecutors,
)
from squall.services.scheduler.groups import PlannedJob
from squall.services.scheduler.handover import Handovers
from squall.services.scheduler.keyed_state import StateBook
from squall.services.scheduler.membership import ExecutorRecord, Membership
from squall.services.scheduler.observed import Observatory, snapshot
from squall.services.scheduler.persisted_plans import PersistedPlans
from squall.services.scheduler.placement import PlacementPolicy
from squall.services.scheduler.plan_cache import MissingNodes, PlanCache
from squall.services.scheduler.planner import plan_job
from squall.services.scheduler.runs import SubmittedRun
from squall.services.scheduler.shipped import Shipment, ShippedPlan

# After a connection to the ROUTER dropped, probe the drivers for this long: the ROUTER may forget
# the peer a moment after its monitor reports the drop (the probes go out on each tick).
PROBE_WINDOW = 0.25

HUNG_NOTE = ("its process answers, but its heartbeats or its loop have stopped: a call holding the GIL, a task "
             "blocking the loop, or a deadlock; its work is left running")

Handler = Callable[[Any], list[Instruction]]


def _job_event(msg: Message) -> Log | None:
    """The log line of what a driver is told about its jobs and runs (None for other messages)."""
    if type(msg) is JobDone:
        return Log("debug", "job_done", {"job": msg.job_id, "elapsed": round(msg.elapsed, 4)})
    if type(msg) is JobFailed:
        return Log("warning", "job_failed", {"job": msg.job_id, "kind": msg.kind, "reason": msg.message})
    if type(msg) is RunDone:
        return Log("info", "run_done", {"run": msg.run_id, "groups": len(msg.groups)})
    return None


class SchedulerState:
    def __init__(self, settings: Settings, incarnation: str = "", clock_offset: float = 0.0) -> None:
        self.settings = settings
        self.incarnation = incarnation  # new at each start of the service: drivers notice a restart by it
        self.members = Membership(settings.death_timeout, settings.hung_timeout, join_timeout=settings.join_timeout)
        self.code: dict[str, bytes] = {}  # every piece of code drivers have sent, by code key
        self.plans = PlanCache(settings.plan_cache_nodes, settings.max_message_bytes)  # plan nodes drivers sent (plan deltas)
        self.runs: dict[str, SubmittedRun] = {}
        self.book = StateBook(settings.checkpoint_every_groups, settings.replay, settings.checkpoint_map_outputs)
        # Seeded by the incarnation: random placement differs from one scheduler process to the next.
        self.placement = PlacementPolicy(settings.lc_placement, seed=incarnation)
        self.persisted = PersistedPlans(settings, self.members, self.book, self.runs, self._advance)
        self.drizzle = DrizzleMode(settings, self.members, self.book, self.placement, self.runs, self._ship, self._release, self._advance,
                                   clock_offset)  # wall clock minus `now`'s: batch times are wall clock
        self.bsp = BspMode(self.members, self.placement, settings.max_message_bytes, self._ship, self._bsp_job_ended)
        # Scaling: keyed state moves between executors at group boundaries, and executors leave gracefully.
        self.handovers = Handovers(self.book, self.members, self.drizzle.prescheduled, settings.rebalance_state, settings.handover_timeout)
        self.drizzle.before_group = self.handovers.before_group
        self.departures = Departures(self.members, self.book, self.runs, self.bsp)
        self.driver_states: dict[bytes, set[str]] = {}  # driver -> keyed states its streams use, until forgotten
        self.observed = Observatory(clock_offset)  # for people: the metrics endpoint, the dashboard, `squall status`
        self.drizzle.launched = self.observed.dispatched
        self._watched_version = 0  # the membership version the last WatchExecutors gave (at first: nothing to watch)
        self._probe_until = -1.0  # probe drivers until then (a connection dropped shortly before)
        # Messages handled and sent, by type (GetMetrics): shows what the scheduler is (not) involved in.
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self._handlers: dict[type, Handler] = {
            RegisterExecutor: self._on_register,
            Decommission: self._on_decommission,
            Heartbeat: self._on_heartbeat,
            SubmitJobs: self._on_submit,
            CancelRun: self._on_cancel,
            ForgetPersisted: lambda ev: self.persisted.forget(cast(ForgetPersisted, ev.msg).dataset_ids),
            PersistedLocations: lambda ev: self.persisted.locations(cast(PersistedLocations, ev.msg), ev.now),
            TaskFinished: self._on_task_finished,
            TaskFailed: self._on_task_failed,
            ResultPartition: self._on_result_partition,
            GroupDone: self._on_group_done,
            StateCheckpointed: self._on_state_checkpointed,
            ForgetStates: self._on_forget_states,
            GetClusterStatus: self._on_get_cluster_status,
            GetSnapshot: self._on_get_snapshot,
            StreamProgress: self._on_stream_progress,
            GetMetrics: self._on_get_metrics,
            GetTracked: self._on_get_tracked,
            Ping: self._on_ping,
            ErrorReply: self._on_shuffle_meta_error,
            Tick: self._on_tick,
            ExecutorConnected: self._on_executor_connected,
            ExecutorDisconnected: self._on_executor_disconnected,
            ConnectionDropped: self._on_connection_dropped,
            DriversGone: self._on_drivers_gone,
        }

    def handles(self) -> list[type[Message]]:
        """The message types handle() takes (wrapped in Received)."""
        return [t for t in self._handlers if issubclass(t, Message)]

    def handle(self, event: Event) -> list[Instruction]:
        """What to do about `event`: its handler's instructions, then a Log for each job or run
        outcome they tell a driver, and WatchExecutors when membership changed. Counts messages in
        and out by type (GetMetrics)."""
        if type(event) is Received:
            name = type(event.msg).__name__
            self.received[name] += 1
            instructions = self._handlers[type(event.msg)](event)
        else:
            instructions = self._handlers[type(event)](event)
        logs: list[Instruction] = []
        for ins in instructions:
            if type(ins) is Send or type(ins) is ToShuffleMeta:
                self.sent[type(ins.msg).__name__] += 1
                note = _job_event(ins.msg) if type(ins) is Send else None
                if note is not None:
                    logs.append(note)
                    if type(ins.msg) is RunDone:
                        self.observed.run_over(ins.msg.run_id)
            elif type(ins) is Log:
                self.observed.logged(ins.event, ins.fields, event.now)
        if self.members.version != self._watched_version:  # not on every event: only when membership changed
            self._watched_version = self.members.version
            logs.append(WatchExecutors(self.members.watched()))
        return instructions + logs if logs else instructions

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        records = self.members.executors.values()
        states = self.book.states.values()
        return {
            "code": len(self.code),
            "plan_nodes": len(self.plans),
            "runs": len(self.runs),
            "run_stats": sum(len(run.stats) for run in self.runs.values()),
            "prescheduled": len(self.drizzle.prescheduled),
            "bsp_jobs": len(self.bsp.jobs),
            "pending": len(self.bsp.pending),
            "driver_states": len(self.driver_states),
            **self.persisted.tracked(),
            "executors": len(records),
            "executor_stages": sum(len(r.shipped) for r in records),
            "executor_code": sum(len(r.shipped.code_uses) for r in records),
            "states": len(self.book.states),
            "states_retained": sum(len(s.retained) for s in states),
            "handovers": len(self.handovers.pending),
            "held_runs": len(self.handovers.held),
            "leaving": len(self.departures.asked),
            "message_types": len(self.received) + len(self.sent),
        }

    @property
    def executors(self) -> dict[str, ExecutorRecord]:
        return self.members.executors

    # --- questions answered ---------------------------------------------------------------------

    def _on_get_cluster_status(self, ev: Received) -> list[Instruction]:
        running_jobs = len(self.drizzle.prescheduled) + len(self.bsp.jobs)
        return [Send(cast(bytes, ev.peer), self.members.status(running_jobs=running_jobs, now=ev.now))]

    def snapshot(self, now_wall: float) -> dict[str, Any]:
        """The cluster as the scheduler sees it, for people (the dashboard, `squall status`):
        observed.py says what each part holds, docs/observability.md lists the fields."""
        now = now_wall - self.observed.clock_offset
        return snapshot(self.observed, self.members.live(), self.drizzle.speeds, self.runs, now)

    def _on_get_snapshot(self, ev: Received) -> list[Instruction]:
        body = msgspec.json.encode(self.snapshot(self.observed.wall(ev.now)))
        return [Send(cast(bytes, ev.peer), Snapshot(json=body))]

    def _on_stream_progress(self, ev: Received) -> list[Instruction]:
        self.observed.progress(cast(StreamProgress, ev.msg), ev.now)
        return []

    def _on_get_metrics(self, ev: Received) -> list[Instruction]:
        return [Send(cast(bytes, ev.peer), Metrics(received=dict(self.received), sent=dict(self.sent)))]

    def _on_get_tracked(self, ev: Received) -> list[Instruction]:
        return [Send(cast(bytes, ev.peer), tracked_reply("scheduler", self.tracked(), cast(GetTracked, ev.msg).heap))]

    def _on_ping(self, ev: Received) -> list[Instruction]:
        nonce = cast(Ping, ev.msg).nonce
        return [Send(cast(bytes, ev.peer), Pong(nonce=nonce, service="scheduler", incarnation=self.incarnation))]

    def _on_shuffle_meta_error(self, ev: Received) -> list[Instruction]:
        """shuffle_meta never answers the scheduler, except with errors."""
        return [Log("warning", "shuffle_meta_error", {"reason": cast(ErrorReply, ev.msg).reason})]

    # --- membership -----------------------------------------------------------------------------

    def _on_register(self, ev: Received) -> list[Instruction]:
        msg, peer, now = cast(RegisterExecutor, ev.msg), cast(bytes, ev.peer), ev.now
        registered = Send(peer, Registered(executor_id=msg.executor_id, shuffle_meta_address=self.settings.shuffle_meta_address))
        if self.members.is_retry(msg):
            record = self.members.executors[msg.executor_id]
            record.peer = peer  # the same process, possibly on a new connection
            record.last_seen = now
            return [registered]
        instructions: list[Instruction] = []
        if self.members.get(msg.executor_id) is not None:
            instructions += self._lose([(msg.executor_id, "registered again (restarted)")], now)
        self.members.add(peer, msg, now)
        self.observed.event("executor_joined", f"executor={msg.executor_id}, address={msg.data_address}", now)
        return [*instructions, registered, *self.bsp.assign()]

    def _on_heartbeat(self, ev: Received) -> list[Instruction]:
        msg = cast(Heartbeat, ev.msg)
        record = self.members.beat(msg, ev.now)
        if record is None:
            return [Send(cast(bytes, ev.peer), Reregister(executor_id=msg.executor_id, registration=msg.registration))]
        if record.hung and not self.members.is_hung(record, ev.now):
            was_running, record.hung = record.hung, ""
            return [Log("info", "executor_beating_again", {"executor": record.executor_id, "was_running": was_running})]
        return []

    def _on_tick(self, ev: Tick) -> list[Instruction]:
        now = ev.now
        instructions: list[Instruction] = []
        for record, silent in self.members.newly_hung(now):  # reported, never failed: its process answers
            record.hung = self._work_on(record.executor_id) or "no task"
            details = {"executor": record.executor_id, "silent_for": round(silent, 2), "running": record.hung, "note": HUNG_NOTE}
            instructions.append(Log("warning", "executor_hung", details))
        expired = self.members.expired(now)
        instructions += self._lose([(executor_id, f"no heartbeat for {silent:.2f}s, its connection not up yet") for executor_id, silent in expired], now)
        instructions += self.persisted.expire(now)
        if now <= self._probe_until:
            instructions += self._probe_drivers()
        if self.handovers.pending:
            abandoned = self.handovers.expired(now)
            instructions += abandoned + (self._resume_held(now) if abandoned else [])
        if self.departures.asked:
            instructions += self.departures.ready_to_go(now)
        return instructions + self.drizzle.speculate(now)

    def _on_executor_connected(self, ev: ExecutorConnected) -> list[Instruction]:
        self.members.connected(ev.executor_id, ev.joined)
        return []

    def _on_executor_disconnected(self, ev: ExecutorDisconnected) -> list[Instruction]:
        reason = f"its connection dropped: closed, or silent for {self.settings.death_timeout:.2f}s"
        return self._lose([(ev.executor_id, reason)], ev.now)

    def _lose(self, losses: list[tuple[str, str]], now: float) -> list[Instruction]:
        """Executors are gone. All leave membership first, so that work failed over by one loss
        is never placed on another executor that died in the same breath."""
        gone = [(executor_id, reason) for executor_id, reason in losses if self.members.remove(executor_id) is not None]
        actions: list[Instruction] = self.departures.stay() if gone else []  # the last taking work gone: leavers stay
        for executor_id, reason in gone:
            actions += self._handle_loss(executor_id, reason, now)
        if gone:
            actions += self._resume_held(now)
        return actions + (self.bsp.assign() if gone else [])

    def _handle_loss(self, executor_id: str, reason: str, now: float) -> list[Instruction]:
        actions: list[Instruction] = [
            Log("warning", "executor_lost", {"executor": executor_id, "reason": reason}),
            ToShuffleMeta(ForgetExecutor(executor_id=executor_id)),
        ]
        why = f"executor {executor_id} was lost ({reason})"
        actions += self.bsp.executor_lost(executor_id, why, now)
        actions += self.handovers.executor_lost(executor_id)
        moved = self.book.executor_lost(executor_id, [e.executor_id for e in self.members.placeable()])
        return actions + self.drizzle.executor_lost(executor_id, why, moved, now)

    def _on_decommission(self, ev: Received) -> list[Instruction]:
        """An executor is to leave (it got SIGTERM, or a person asked): see decommission.py."""
        msg = cast(Decommission, ev.msg)
        instructions = self.departures.request(msg, cast(bytes, ev.peer), ev.now)
        record = self.members.get(msg.executor_id)
        if record is None or not record.leaving:
            return instructions
        abandoned = self.handovers.leaving(msg.executor_id)
        return instructions + abandoned + (self._resume_held(ev.now) if abandoned else [])

    def _resume_held(self, now: float) -> list[Instruction]:
        """Runs whose next group waited for a keyed state handover try again."""
        instructions: list[Instruction] = []
        for run_id in self.handovers.waiting_runs():
            run = self.runs.get(run_id)
            if run is None:  # cancelled, or its driver gone
                self.handovers.held.discard(run_id)
                continue
            instructions += self._advance(run, now)
        return instructions

    def _work_on(self, executor_id: str) -> str:
        """What the scheduler has on an executor and has not heard the end of, for a person."""
        work = self.drizzle.work_on(executor_id)
        record = self.members.get(executor_id)
        work += [f"job {job_id} stage {stage_id} partition {partition}" for job_id, stage_id, partition in sorted(record.running if record else ())]
        return "; ".join(work[:5]) + (f"; and {len(work) - 5} more" if len(work) > 5 else "")

    # --- runs -----------------------------------------------------------------------------------

    def _on_submit(self, ev: Received) -> list[Instruction]:
        msg, peer, now = cast(SubmitJobs, ev.msg), cast(bytes, ev.peer), ev.now
        if msg.run_id in self.runs:
            return self._refuse(peer, msg, "plan", f"run {msg.run_id} is already running")
        self.code.update(msg.code)
        missing = sorted({k for job in msg.jobs for k in job.code_keys()} - self.code.keys())
        if missing:
            return self._refuse(peer, msg, "missing_code", f"the scheduler lacks code {', '.join(missing[:5])}")
        if not self.members.executors:
            return self._refuse(peer, msg, "no_executors", "no executors are registered with the scheduler")
        run = SubmittedRun(
            run_id=msg.run_id,
            driver=peer,
            queue=deque(),
            group_size=msg.group_size,
            preschedule=msg.preschedule,
            barrier=msg.barrier,
            priority=msg.priority,
            # BSP relays results; so does a run whose driver's address its executors cannot reach
            result_to=reachable_result_address(msg.result_to, [r.data_address for r in self.members.live()]) if msg.preschedule else "",
        )
        actions: list[Instruction] = []
        self.observed.submitted(msg.run_id, sum(1 for spec in msg.jobs if not spec.replay_only), msg.stream_id, msg.priority, now)
        known_states = set(self.book.states)
        replays: list[PlannedJob] = []
        position = msg.first_batch
        for spec in msg.jobs:
            batch = spec.batch if spec.batch >= 0 else position
            position += 0 if spec.replay_only else 1
            try:
                source = self.plans.source(spec)
                if source.persisted({}):  # planned at dispatch, around the blocks executors hold then
                    job = PlannedJob(spec.job_id, batch, JobPlan(stages=[]), [], spec.not_before, source=source, needs_blocks=True)
                    run.queue.append(job)
                    continue
                plan = plan_job(source.resolve({}))
            except MissingNodes as exc:  # the driver sends the job again, whole
                actions.append(Send(peer, JobFailed(job_id=spec.job_id, kind="plan_cache_miss", message=str(exc), batch=batch)))
                continue
            except PlanError as exc:
                actions.append(Send(peer, JobFailed(job_id=spec.job_id, kind="plan", message=str(exc), batch=batch)))
                continue
            job = PlannedJob(spec.job_id, batch, plan, [s.spec.key() for s in plan.stages], spec.not_before)
            self.book.register(job)
            run.state_ids |= self.book.state_ids(job)
            if spec.replay_only:
                replays.append(job)
            else:
                run.queue.append(job)
        for state_id, checkpoint in msg.resume_states.items():
            if state_id in self.book.states and state_id not in known_states:  # we restarted: rebuild it all
                self.book.resume(state_id, checkpoint, [e.executor_id for e in self.members.placeable()], replays)
        self.runs[run.run_id] = run
        if run.state_ids:
            self.driver_states.setdefault(peer, set()).update(run.state_ids)
        return actions + self._advance(run, now)

    def _on_cancel(self, ev: Received) -> list[Instruction]:
        """The driver gave up on a run: nothing of it runs any more (an unknown run: nothing to do)."""
        run = self.runs.get(cast(CancelRun, ev.msg).run_id)
        if run is None:
            return []
        return self._cancel_run(run, "the driver cancelled it", ev.now)

    def _cancel_run(self, run: SubmittedRun, why: str, now: float) -> list[Instruction]:
        return stop_run(run, why, self.drizzle.prescheduled, self.bsp, self.members) + self._advance(run, now)

    def _refuse(self, peer: bytes, msg: SubmitJobs, kind: FailureKind, message: str) -> list[Instruction]:
        fails: list[Instruction] = [
            Send(peer, JobFailed(job_id=job.job_id, kind=kind, message=message, batch=i))
            for i, job in enumerate(msg.jobs, start=msg.first_batch)
        ]
        return [*fails, Send(peer, RunDone(run_id=msg.run_id))]

    def _advance(self, run: SubmittedRun, now: float) -> list[Instruction]:
        """Start the run's next groups (or BSP job); finish the run when nothing is left."""
        if not run.queue:
            if run.groups or run.bsp is not None:
                return []
            self.runs.pop(run.run_id, None)
            checkpoints = {sid: self.book.states[sid].oldest_checkpoint() for sid in sorted(run.state_ids) if sid in self.book.states}
            done = RunDone(run_id=run.run_id, groups=run.stats, skipped=run.skipped, checkpoints=checkpoints, direct=run.direct)
            return [Send(run.driver, done)]
        if not self.members.executors:
            actions: list[Instruction] = []
            while run.queue:
                job = run.queue.popleft()
                failed = JobFailed(job_id=job.job_id, kind="no_executors", message="no executors are left", batch=job.batch)
                actions.append(Send(run.driver, failed))
            return actions + self._advance(run, now)
        if (run.bsp is not None) if not run.preschedule else run.groups_in_flight >= GROUPS_IN_FLIGHT:
            return []
        planning = self.persisted.plan_next(run, now)
        if planning is not None:
            return planning
        if not run.preschedule:
            return self.bsp.start(run, now)
        return self.drizzle.dispatch(run, now)

    # --- tasks and groups -----------------------------------------------------------------------

    def _on_result_partition(self, ev: Received) -> list[Instruction]:
        return self.drizzle.result_partition(cast(ResultPartition, ev.msg), ev.payloads, ev.now)

    def _on_group_done(self, ev: Received) -> list[Instruction]:
        self.observed.skipped_records += cast(GroupDone, ev.msg).skipped
        done = self.drizzle.group_done(cast(GroupDone, ev.msg), ev.now)
        return done + self._resume_held(ev.now) if self.handovers.held else done

    def _on_task_finished(self, ev: Received) -> list[Instruction]:
        return self.bsp.task_finished(cast(TaskFinished, ev.msg), ev.payloads, ev.now)

    def _on_task_failed(self, ev: Received) -> list[Instruction]:
        msg, now = cast(TaskFailed, ev.msg), ev.now
        self.bsp.free_slot(msg.executor_id, (msg.job_id, msg.stage_id, msg.partition))
        if msg.kind == "block":  # a persisted block it was to read is gone: plan the job again
            replanned = self.drizzle.replan(msg, now)
            if replanned is not None:
                return replanned
        kind: FailureKind = "fetch" if msg.kind in ("fetch", "block") else "task"
        where = f"stage {msg.stage_id}, partition {msg.partition} on executor {msg.executor_id}"
        details = dict(error_type=msg.error_type, traceback=msg.traceback, stage_id=msg.stage_id, partition=msg.partition)
        prescheduled = self.drizzle.task_failed(msg, kind, where, details)
        if prescheduled is not None:
            return prescheduled
        bsp = self.bsp.jobs.get(msg.job_id)
        if bsp is None or not bsp[1].is_current(msg.executor_id, msg.stage_id, msg.partition):
            return self.bsp.assign()
        bsp_run, bsp_job = bsp
        message = f"task failed in batch {bsp_job.batch} (job {bsp_job.job_id}), {where}: {msg.error_type}: {msg.message}"
        return self.bsp.fail(bsp_run, bsp_job, kind, message, now, **details)

    def _ship(self, shipped: ShippedPlan, stage_keys: set[str], specs: dict[str, StageSpec]) -> Shipment:
        """The stage specs and code an executor (what it was `shipped`) needs for these stages and
        does not have yet, and what it should forget: past executor_stage_cache specs, the least
        recently used that no job in flight uses (shipped.py)."""
        stages, code = shipped.ship(stage_keys, specs, self.code)
        forget_stages: list[str] = []
        forget_code: list[str] = []
        if len(shipped) > self.settings.executor_stage_cache:
            forget_stages, forget_code = shipped.evict(self.settings.executor_stage_cache, stage_keys | self._stages_in_flight())
        return Shipment(stages, code, forget_stages, forget_code)

    def _stages_in_flight(self) -> set[str]:
        return self.drizzle.stage_keys_in_flight() | self.bsp.stage_keys_in_flight()

    def _bsp_job_ended(self, run: SubmittedRun, job: BspJob, now: float) -> list[Instruction]:
        """A BSP job is over: executors may drop its blocks, and its run moves on."""
        return self._release([job.job_id], sorted(job.touched)) + self._advance(run, now)

    def _release(self, job_ids: list[str], executor_ids: list[str], superseded: bool = False) -> list[Instruction]:
        if not job_ids:
            return []
        actions: list[Instruction] = [ToShuffleMeta(ForgetJob(job_ids=job_ids))]
        for executor_id in executor_ids:
            record = self.members.get(executor_id)
            if record is not None:
                actions.append(Send(record.peer, ReleaseJob(job_ids=job_ids, superseded=superseded)))
        return actions

    # --- keyed state ----------------------------------------------------------------------------

    def _on_state_checkpointed(self, ev: Received) -> list[Instruction]:
        msg = cast(StateCheckpointed, ev.msg)
        """Checkpoints were written; once every partition of a state has one at batch c or later,
        an executor deletes the map-output checkpoints of batches up to c."""
        actions: list[Instruction] = []
        live = self.members.live()
        for state_id, partition, batch in msg.checkpoints:
            oldest = self.book.checkpointed(state_id, partition, batch)
            if oldest is not None and live:
                actions.append(Send(live[0].peer, PruneCheckpoints(state_id=state_id, before=oldest + 1)))
        return actions + self._resume_held(ev.now) if self.handovers.held else actions

    def _on_forget_states(self, ev: Received) -> list[Instruction]:
        return self._forget_states(cast(ForgetStates, ev.msg).state_ids)

    def _forget_states(self, state_ids: list[str]) -> list[Instruction]:
        """A stream ended: forget its states here and on every executor."""
        self.book.forget(state_ids)
        self.handovers.forget(state_ids)
        for driver, states in list(self.driver_states.items()):
            states.difference_update(state_ids)
            if not states:
                del self.driver_states[driver]
        forget = ForgetStates(state_ids=state_ids)
        return [Send(record.peer, forget) for record in self.members.live()]

    # --- drivers that vanished ------------------------------------------------------------------

    def drivers(self) -> set[bytes]:
        """Drivers the scheduler holds something for: runs in flight, keyed state of their
        streams, or persisted datasets."""
        return {run.driver for run in self.runs.values()} | set(self.driver_states) | set(self.persisted.driver_datasets)

    def _on_connection_dropped(self, ev: ConnectionDropped) -> list[Instruction]:
        """Whose connection dropped, the ROUTER tells only when asked: ask it for a while."""
        self._probe_until = ev.now + PROBE_WINDOW
        return self._probe_drivers()

    def _probe_drivers(self) -> list[Instruction]:
        drivers = self.drivers()
        return [ProbeDrivers(tuple(sorted(drivers)))] if drivers else []

    def _on_drivers_gone(self, ev: DriversGone) -> list[Instruction]:
        instructions: list[Instruction] = []
        for driver in ev.drivers:
            if driver in self.drivers():
                instructions.append(Log("warning", "driver_gone", {"driver": driver.hex()}))
                instructions += self._driver_lost(driver, ev.now)
        return instructions

    def _driver_lost(self, driver: bytes, now: float) -> list[Instruction]:
        """A driver's connection is gone (its process died, or its context closed): cancel its
        runs, forget the keyed state of its streams (no one can resume them) and drop its
        persisted datasets (no one can read them)."""
        instructions: list[Instruction] = []
        for run in [r for r in self.runs.values() if r.driver == driver]:
            instructions += self._cancel_run(run, "its driver is gone", now)
        states = self.driver_states.pop(driver, set())
        if states:
            instructions += self._forget_states(sorted(states))
        instructions += self.persisted.driver_gone(driver)
        return [i for i in instructions if not (isinstance(i, Send) and i.peer == driver)]  # it hears nothing more

    # --- invariants -----------------------------------------------------------------------------

    def validate(self) -> None:
        """Check the tables agree with each other (AssertionError naming what does not). Costs a
        pass over everything held: the unit tests call it after every event, the service never."""
        executors = self.members.executors
        assert self._watched_version == self.members.version, "membership changed without a WatchExecutors"
        for executor_id, record in executors.items():
            assert record.executor_id == executor_id, f"executor {executor_id} is filed under another id"
            assert record.free_slots >= 0, f"executor {executor_id} runs {len(record.running)} BSP tasks on {record.slots} slots"
        in_groups: set[str] = set()
        for run_id, run in self.runs.items():
            assert run.run_id == run_id, f"run {run_id} is filed under another id"
            assert run.queue or run.groups or run.bsp is not None, f"run {run_id} has nothing queued or in flight, yet is not done"
            for group in run.groups:
                assert group.run_id == run_id, f"group {group.group_id} of run {group.run_id} is held by run {run_id}"
                assert group.waiting <= executors.keys(), f"group {group.group_id} waits for executors that are gone: {group.waiting - executors.keys()}"
                for job in group.jobs:
                    in_groups.add(job.wire_id)
                    entry = self.drizzle.prescheduled.get(job.wire_id)
                    assert entry is not None and entry[0] is run and entry[1] is job, f"job {job.wire_id} in flight is not in prescheduled"
                    lost = job.placed.keys() - executors.keys()
                    assert job.over or not lost, f"job {job.wire_id} is not over and has tasks on executors that are gone: {lost}"
            if run.bsp is not None:
                bsp_entry = self.bsp.jobs.get(run.bsp.job_id)
                assert bsp_entry is not None and bsp_entry[0] is run and bsp_entry[1] is run.bsp, f"BSP job {run.bsp.job_id} of run {run_id} is not in flight"
        assert in_groups == self.drizzle.prescheduled.keys(), f"prescheduled jobs of no group in flight: {self.drizzle.prescheduled.keys() - in_groups}"
        for job_id, (bsp_run, bsp_job) in self.bsp.jobs.items():
            assert self.runs.get(bsp_run.run_id) is bsp_run and bsp_run.bsp is bsp_job, f"BSP job {job_id} outlived its run {bsp_run.run_id}"
            for (stage_id, partition), executor_id in bsp_job.placed.items():
                if partition in bsp_job.progress[stage_id].remaining:
                    assert executor_id in executors, f"BSP task {job_id}/{stage_id}/{partition} waits on executor {executor_id}, which is gone"
        assert all(key[0] in self.bsp.jobs for key in self.bsp.pending), "a pending BSP task of a job no longer in flight"
        for state_id, moves in self.handovers.pending.items():
            owners = self.book.states[state_id].owners if state_id in self.book.states else {}
            for m in moves:
                assert owners.get(m.partition) == m.old, f"partition {m.partition} of {state_id} is handed over by {m.old}, which does not own it"
                assert m.new in executors and not executors[m.new].leaving, f"partition {m.partition} of {state_id} goes to {m.new}, gone or leaving"
        assert all(self.driver_states.values()), "a driver kept with no keyed state"
        self.persisted.validate()
