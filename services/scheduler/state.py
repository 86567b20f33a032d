"""The scheduler's pure core: events in, actions out, no sockets (tested without them).

A driver submits a run: a sequence of jobs (micro-batches). In Drizzle mode (pre-scheduled) the
jobs are dispatched a group at a time: every task of every job of the group is placed at once and
each executor gets one LaunchGroup; mappers push to reducers directly, results are relayed to the
driver as they arrive, and each executor reports once per group. The scheduler is involved only
at group boundaries. In BSP mode each job runs stage by stage: a stage's tasks are launched when
its parents are done, and executors report every task.

A task failure fails its job with a clear reason; the run's other jobs, later groups and the
cluster go on. When an executor dies, a pre-scheduled run replays its unfinished jobs on the
survivors under new attempt ids (the epoch moves on, so the dead attempts' messages are stale),
and keyed state the executor owned is rebuilt by new owners from checkpoints (keyed_state.py).
Each job's result still reaches the driver exactly once. A BSP job that loses an executor fails.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from squall.common.plan import PlanError, StageSpec
from squall.common.protocol import (
    CancelRun,
    FailureKind,
    ForgetExecutor,
    ForgetJob,
    ForgetStates,
    GroupDone,
    GroupStats,
    Heartbeat,
    JobFailed,
    LaunchGroup,
    PruneCheckpoints,
    Registered,
    RegisterExecutor,
    ReleaseJob,
    Reregister,
    ResultPartition,
    RunDone,
    StateCheckpointed,
    StateRestore,
    SubmitJobs,
    TaskFailed,
    encode,
    frames_size,
)
from squall.common.settings import Settings
from squall.services.scheduler.actions import Action, Send, ToShuffleMeta, job_done, result_blocks, result_too_large
from squall.services.scheduler.bsp_mode import BspMode
from squall.services.scheduler.cancellation import Cancellation
from squall.services.scheduler.groups import GroupRun, PlannedJob, place_group
from squall.services.scheduler.jobs import JobRun, TaskKey
from squall.services.scheduler.keyed_state import Restore, StateBook
from squall.services.scheduler.membership import ExecutorRecord, Membership
from squall.services.scheduler.planner import plan_job

GROUPS_IN_FLIGHT = 2


@dataclass(frozen=True)
class Shipment:
    """What a launch carries of the plan: specs and code the executor lacks, and what to forget."""

    stages: dict[str, StageSpec]
    code: dict[str, bytes]
    forget_stages: list[str]
    forget_code: list[str]


@dataclass
class Run:
    run_id: str
    driver: bytes
    queue: deque[PlannedJob]
    group_size: int
    preschedule: bool
    barrier: bool
    groups: list[GroupRun] = field(default_factory=list)  # Drizzle: groups in flight, oldest first
    bsp: JobRun | None = None  # BSP: the job in flight
    stats: list[GroupStats] = field(default_factory=list)
    skipped: int = 0  # bad records skipped over the run
    state_ids: set[str] = field(default_factory=set)  # the keyed states its jobs use


class SchedulerState(BspMode, Cancellation):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.members = Membership(settings.death_timeout, settings.hung_timeout)
        self.code: dict[str, bytes] = {}  # every piece of code drivers have sent, by code key
        self.runs: dict[str, Run] = {}
        self.prescheduled: dict[str, tuple[Run, PlannedJob]] = {}  # job_id -> its run, while in flight
        self.bsp_jobs: dict[str, tuple[Run, JobRun]] = {}
        self.pending: deque[TaskKey] = deque()  # BSP tasks waiting for a slot
        self.lost: deque[tuple[str, str]] = deque(maxlen=1000)  # (executor_id, reason), for logs
        self.recoveries: deque[dict[str, object]] = deque(maxlen=1000)  # what each loss replayed, for logs
        self.cancellations: deque[dict[str, object]] = deque(maxlen=1000)  # runs cancelled and why, for logs
        self.driver_states: dict[bytes, set[str]] = {}  # driver -> keyed states its streams use, until forgotten
        self.hung: deque[tuple[bool, dict[str, object]]] = deque(maxlen=1000)  # (hung, or beating again; details), for logs
        self.book = StateBook(settings.checkpoint_every_groups, settings.replay, settings.checkpoint_map_outputs)
        self.epoch = 0  # moves on at each recovery: replays get attempt ids of the new epoch
        self._group_ids = 0

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        records = self.members.executors.values()
        states = self.book.states.values()
        return {
            "code": len(self.code),
            "runs": len(self.runs),
            "run_stats": sum(len(run.stats) for run in self.runs.values()),
            "prescheduled": len(self.prescheduled),
            "bsp_jobs": len(self.bsp_jobs),
            "pending": len(self.pending),
            "driver_states": len(self.driver_states),
            "executors": len(records),
            "executor_stages": sum(len(r.shipped) for r in records),
            "executor_code": sum(len(r.shipped.code_uses) for r in records),
            "states": len(self.book.states),
            "states_retained": sum(len(s.retained) for s in states),
        }

    @property
    def executors(self) -> dict[str, ExecutorRecord]:
        return self.members.executors

    # --- membership -----------------------------------------------------------------------------

    def register(self, peer: bytes, msg: RegisterExecutor, now: float) -> list[Action]:
        registered = Send(peer, Registered(executor_id=msg.executor_id, shuffle_meta_address=self.settings.shuffle_meta_address))
        if self.members.is_retry(msg):
            record = self.members.executors[msg.executor_id]
            record.peer = peer  # the same process, possibly on a new connection
            record.last_seen = now
            return [registered]
        actions: list[Action] = []
        if self.members.get(msg.executor_id) is not None:
            actions += self.executor_lost(msg.executor_id, "registered again (restarted)", now)
        self.members.add(peer, msg, now)
        return [*actions, registered, *self.assign()]

    def heartbeat(self, peer: bytes, msg: Heartbeat, now: float) -> list[Action]:
        record = self.members.beat(msg.executor_id, msg.incarnation, now, msg.loop_silent)
        if record is None:
            return [Send(peer, Reregister(executor_id=msg.executor_id, registration=msg.registration))]
        if record.hung and not self.members.is_hung(record, now):
            self.hung.append((False, {"executor": record.executor_id, "was_running": record.hung}))
            record.hung = ""
        return []

    def tick(self, now: float) -> list[Action]:
        for record, silent in self.members.newly_hung(now):  # reported, never failed: its process answers
            record.hung = self._work_on(record.executor_id) or "no task"
            self.hung.append((True, {"executor": record.executor_id, "silent_for": round(silent, 2), "running": record.hung}))
        expired = self.members.expired(now)
        return self._lose([(executor_id, f"no heartbeat for {silent:.2f}s, its connection not up yet") for executor_id, silent in expired], now)

    def executor_lost(self, executor_id: str, reason: str, now: float) -> list[Action]:
        return self._lose([(executor_id, reason)], now)

    def _lose(self, losses: list[tuple[str, str]], now: float) -> list[Action]:
        """Executors are gone. All leave membership first, so that work failed over by one loss
        is never placed on another executor that died in the same breath."""
        gone = [(executor_id, reason) for executor_id, reason in losses if self.members.remove(executor_id) is not None]
        actions: list[Action] = []
        for executor_id, reason in gone:
            actions += self._handle_loss(executor_id, reason, now)
        return actions + (self.assign() if gone else [])

    def _handle_loss(self, executor_id: str, reason: str, now: float) -> list[Action]:
        self.lost.append((executor_id, reason))
        actions: list[Action] = [ToShuffleMeta(ForgetExecutor(executor_id=executor_id))]
        why = f"executor {executor_id} was lost ({reason})"
        for run, job in list(self.bsp_jobs.values()):
            hit = job.depends_on(executor_id)
            if hit is not None:
                stage_id, partition = hit
                message = f"{why} while job {job.job_id} needed its task or output (stage {stage_id}, partition {partition})"
                actions += self._fail_bsp(run, job, "executor_lost", message, now, stage_id=stage_id, partition=partition)
        survivors = [e.executor_id for e in self.members.live()]
        moved = self.book.executor_lost(executor_id, survivors)
        for run in list(self.runs.values()):
            hit = [j for g in run.groups for j in g.jobs if not j.over and executor_id in j.placed]
            if hit and not survivors:
                for job in hit:
                    stage_id = min(job.placed[executor_id])
                    message = f"{why} while batch {job.batch} (job {job.job_id}) had tasks there (from stage {stage_id}); no executors are left"
                    actions += self._fail_prescheduled(run, job, "executor_lost", message, stage_id=stage_id)
            elif hit:
                actions += self._replay_run(run, executor_id, moved)
                actions += self._advance(run, now)
                continue
            for group in list(run.groups):
                group.waiting.discard(executor_id)
                actions += self._maybe_group_complete(run, group, now)
        return actions

    def _replay_run(self, run: Run, executor_id: str, moved: list[tuple[str, int, str]]) -> list[Action]:
        """The run lost tasks with the executor: drop its groups in flight, and queue its unfinished
        jobs again, first, as new attempts (placed on the survivors when next dispatched)."""
        self.epoch += 1
        unfinished: list[PlannedJob] = []
        over: list[PlannedJob] = []
        for group in run.groups:
            for job in group.jobs:
                self.prescheduled.pop(job.wire_id, None)
                if job.replay_only and not job.over:  # a rebuild cut short: rebuild again
                    for stage_id, partitions in job.restrict.items():
                        state = job.plan.stages[stage_id].spec.state
                        if state is not None and state.state_id in self.book.states:
                            self.book.states[state.state_id].restoring.update(partitions)
                (unfinished if not job.over and not job.replay_only else over).append(job)
        involved = sorted({e for g in run.groups for j in g.jobs for e in j.executors} - {executor_id})
        run.groups.clear()
        actions = self._release([j.wire_id for j in unfinished], involved, superseded=True)
        actions += self._release([j.wire_id for j in over], involved)
        replays = [job.fork(self.epoch) for job in sorted(unfinished, key=lambda j: j.batch)]
        run.queue.extendleft(reversed(replays))
        self.recoveries.append({
            "run": run.run_id, "executor": executor_id, "epoch": self.epoch,
            "batches": [j.batch for j in replays], "moved_partitions": len(moved), "survivors": len(self.members.executors),
            "new_owners": sorted({owner for _, _, owner in moved}),
        })
        return actions

    def status(self, now: float):  # type: ignore[no-untyped-def]
        return self.members.status(running_jobs=len(self.prescheduled) + len(self.bsp_jobs), now=now)

    def _work_on(self, executor_id: str) -> str:
        """What the scheduler has on an executor and has not heard the end of, for a person."""
        work = [
            f"batch {job.batch} of run {run.run_id} (job {job.wire_id}, stages {sorted(job.placed[executor_id])})"
            for run in self.runs.values() for group in run.groups if executor_id in group.waiting
            for job in group.jobs if executor_id in job.placed and not job.over
        ]
        record = self.members.get(executor_id)
        work += [f"job {job_id} stage {stage_id} partition {partition}" for job_id, stage_id, partition in sorted(record.running if record else ())]
        return "; ".join(work[:5]) + (f"; and {len(work) - 5} more" if len(work) > 5 else "")

    # --- runs -----------------------------------------------------------------------------------

    def submit(self, peer: bytes, msg: SubmitJobs, now: float) -> list[Action]:
        if msg.run_id in self.runs:
            return self._refuse(peer, msg, "plan", f"run {msg.run_id} is already running")
        self.code.update(msg.code)
        missing = sorted({k for job in msg.jobs for k in job.plan.code_keys()} - self.code.keys())
        if missing:
            return self._refuse(peer, msg, "missing_code", f"the scheduler lacks code {', '.join(missing[:5])}")
        if not self.members.executors:
            return self._refuse(peer, msg, "no_executors", "no executors are registered with the scheduler")
        run = Run(
            run_id=msg.run_id,
            driver=peer,
            queue=deque(),
            group_size=msg.group_size,
            preschedule=msg.preschedule,
            barrier=msg.barrier,
        )
        actions: list[Action] = []
        known_states = set(self.book.states)
        replays: list[PlannedJob] = []
        position = msg.first_batch
        for spec in msg.jobs:
            batch = spec.batch if spec.batch >= 0 else position
            position += 0 if spec.replay_only else 1
            try:
                plan = plan_job(spec.plan)
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
                self.book.resume(state_id, checkpoint, [e.executor_id for e in self.members.live()], replays)
        self.runs[run.run_id] = run
        if run.state_ids:
            self.driver_states.setdefault(peer, set()).update(run.state_ids)
        return actions + self._advance(run, now)

    def cancel(self, msg: CancelRun, now: float) -> list[Action]:
        """The driver gave up on a run: nothing of it runs any more (an unknown run: nothing to do)."""
        run = self.runs.get(msg.run_id)
        if run is None:
            return []
        return self._cancel_run(run, "the driver cancelled it", now)

    def _refuse(self, peer: bytes, msg: SubmitJobs, kind: FailureKind, message: str) -> list[Action]:
        fails: list[Action] = [
            Send(peer, JobFailed(job_id=job.job_id, kind=kind, message=message, batch=i))
            for i, job in enumerate(msg.jobs, start=msg.first_batch)
        ]
        return [*fails, Send(peer, RunDone(run_id=msg.run_id))]

    def _advance(self, run: Run, now: float) -> list[Action]:
        """Start the run's next groups (or BSP job); finish the run when nothing is left."""
        if not run.queue:
            if run.groups or run.bsp is not None:
                return []
            self.runs.pop(run.run_id, None)
            checkpoints = {sid: self.book.states[sid].oldest_checkpoint() for sid in sorted(run.state_ids) if sid in self.book.states}
            return [Send(run.driver, RunDone(run_id=run.run_id, groups=run.stats, skipped=run.skipped, checkpoints=checkpoints))]
        if not self.members.executors:
            actions: list[Action] = []
            while run.queue:
                job = run.queue.popleft()
                failed = JobFailed(job_id=job.job_id, kind="no_executors", message="no executors are left", batch=job.batch)
                actions.append(Send(run.driver, failed))
            return actions + self._advance(run, now)
        if not run.preschedule:
            return self._start_bsp(run, now) if run.bsp is None else []
        # Keep the next group in flight behind the current one, so that executors never wait at
        # a group boundary; the scheduler still acts only when a group is dispatched or done.
        actions: list[Action] = []
        while run.queue and len(run.groups) < GROUPS_IN_FLIGHT:
            actions += self._dispatch_group(run, now)
        return actions

    # --- Drizzle mode ---------------------------------------------------------------------------

    def _dispatch_group(self, run: Run, now: float) -> list[Action]:
        jobs = [run.queue.popleft() for _ in range(min(run.group_size, len(run.queue)))]
        restores, replayed, error = self.book.pending_restores(jobs[0])
        if error is not None:
            actions: list[Action] = []
            for job in [*jobs, *run.queue]:
                actions.append(Send(run.driver, JobFailed(job_id=job.job_id, kind="executor_lost", message=error, batch=job.batch)))
            run.queue.clear()
            return actions + self._advance(run, now)  # ends the run (RunDone) once nothing is in flight
        actions = []
        if replayed:
            self.epoch += 1
            rebuild = [job.fork(self.epoch, replay_only=True, restrict=self.book.replay_partitions(job, restores)) for job in replayed]
            rebuild = [job for job in rebuild if job.restrict]
            if rebuild:
                actions += self._launch(run, rebuild, restores, set(), now)
                restores = []  # they travel with the rebuild group, ahead of the next
        return actions + self._launch(run, jobs, restores, self.book.note_group(jobs), now)

    def _launch(self, run: Run, jobs: list[PlannedJob], restores: list[Restore], checkpointing: set[str], now: float) -> list[Action]:
        """Place a group and send each executor its share (with the partitions it must restore)."""
        self._group_ids += 1
        executors = self.members.live()
        replay_only = all(job.replay_only for job in jobs)
        if replay_only and self.settings.replay == "single" and restores:  # for comparison: one survivor rebuilds
            executors = [self.members.executors[restores[0].owner]]
        shares = place_group(jobs, executors, self.settings.reduce_placement, self.book, checkpointing)  # type: ignore[arg-type]
        for r in restores:
            shares.setdefault(r.owner, [])
        group = GroupRun(self._group_ids, run.run_id, jobs, waiting=set(shares), started=now, replay_only=replay_only)
        run.groups.append(group)
        for job in jobs:
            job.started = now
            self.prescheduled[job.wire_id] = (run, job)
        actions: list[Action] = []
        specs = {key: s.spec for job in jobs for key, s in zip(job.stage_keys, job.plan.stages, strict=True)}
        for executor_id, tasks in shares.items():
            record = self.members.executors[executor_id]
            shipment = self._ship(record, {t.stage_key for t in tasks}, specs)
            mine = [StateRestore(r.state_id, r.partition, r.up_to, r.first_batch) for r in restores if r.owner == executor_id]
            launch = LaunchGroup(group_id=group.group_id, tasks=tasks, stages=shipment.stages, code=shipment.code, barrier=run.barrier,
                                 restores=mine, forget_stages=shipment.forget_stages, forget_code=shipment.forget_code)
            frames = encode(launch)  # encoded once: measured here, sent as is
            group.launch_bytes += frames_size(frames)
            group.code_bytes += sum(len(b) for b in shipment.code.values())
            actions.append(Send(record.peer, launch, frames=frames))
        return actions

    def result_partition(self, msg: ResultPartition, payloads: list[object], now: float) -> list[Action]:
        entry = self.prescheduled.get(msg.job_id)
        if entry is None:
            return []
        run, job = entry
        if job.replay_only or job.over or msg.partition in job.results or msg.partition >= job.plan.result_stage.spec.partitions:
            return []  # a duplicate or nonsensical report never completes a job early
        job.results[msg.partition] = payloads[0]
        if job.results_remaining:
            return []
        too_large = result_too_large(job.job_id, job.results, self.settings.max_message_bytes)
        if too_large:
            job.results.clear()
            return self._fail_prescheduled(run, job, "task", too_large, error_type="ResultTooLarge")
        job.done = True
        return [Send(run.driver, job_done(job.job_id, job.results, job.started, now), result_blocks(job.results))]

    def group_done(self, msg: GroupDone, now: float) -> list[Action]:
        for run in self.runs.values():
            for group in run.groups:
                if group.group_id == msg.group_id:
                    group.waiting.discard(msg.executor_id)
                    group.skipped += msg.skipped
                    run.skipped += msg.skipped
                    return self._maybe_group_complete(run, group, now)
        return []

    def _maybe_group_complete(self, run: Run, group: GroupRun, now: float) -> list[Action]:
        if group.waiting or group not in run.groups:
            return []
        run.groups.remove(group)
        run.stats.append(group.stats(now, executors=len({e for j in group.jobs for e in j.executors})))
        actions: list[Action] = []
        for job in group.jobs:
            self.prescheduled.pop(job.wire_id, None)
            if job.replay_only:
                job.done = True
            if not job.over:  # every executor reported, yet results are missing: never silently drop
                message = f"batch {job.batch} (job {job.job_id}) ended with {job.results_remaining} result partitions missing"
                job.failed = True
                actions.append(Send(run.driver, JobFailed(job_id=job.job_id, kind="task", message=message, batch=job.batch)))
        job_ids = [j.wire_id for j in group.jobs]
        involved = sorted({e for j in group.jobs for e in j.executors})
        actions += self._release(job_ids, involved)
        return actions + self._advance(run, now)

    def _fail_prescheduled(self, run: Run, job: PlannedJob, kind: FailureKind, message: str, **details: object) -> list[Action]:
        job.failed = True
        failed = JobFailed(job_id=job.job_id, kind=kind, message=message, batch=job.batch, **details)  # type: ignore[arg-type]
        return [Send(run.driver, failed), *self._release([job.wire_id], sorted(job.executors))]

    # --- both modes -----------------------------------------------------------------------------

    def task_failed(self, msg: TaskFailed, now: float) -> list[Action]:
        self._free_slot(msg.executor_id, (msg.job_id, msg.stage_id, msg.partition))
        kind: FailureKind = "fetch" if msg.kind == "fetch" else "task"
        where = f"stage {msg.stage_id}, partition {msg.partition} on executor {msg.executor_id}"
        details = dict(error_type=msg.error_type, traceback=msg.traceback, stage_id=msg.stage_id, partition=msg.partition)
        entry = self.prescheduled.get(msg.job_id)
        if entry is not None:
            run, job = entry
            if job.over:
                return []
            if job.replay_only:  # keyed state could not be rebuilt: the next batch of the run fails
                message = f"rebuilding keyed state by replaying batch {job.batch} failed, {where}: {msg.error_type}: {msg.message}"
                job.failed = True
                nxt = next((j for g in run.groups for j in g.jobs if not j.replay_only and not j.over), None)
                return self._fail_prescheduled(run, nxt, kind, message, **details) if nxt is not None else []
            message = f"task failed in batch {job.batch} (job {job.job_id}), {where}: {msg.error_type}: {msg.message}"
            return self._fail_prescheduled(run, job, kind, message, **details)
        bsp = self.bsp_jobs.get(msg.job_id)
        if bsp is None or not bsp[1].is_current(msg.executor_id, msg.stage_id, msg.partition):
            return self.assign()
        run, job = bsp
        message = f"task failed in batch {job.batch} (job {job.job_id}), {where}: {msg.error_type}: {msg.message}"
        return self._fail_bsp(run, job, kind, message, now, **details)

    def _ship(self, record: ExecutorRecord, stage_keys: set[str], specs: dict[str, StageSpec]) -> Shipment:
        """The stage specs and code an executor needs for these stages and does not have yet, and
        what it should forget: past executor_stage_cache specs, the least recently used that no
        job in flight uses (shipped.py)."""
        stages, code = record.shipped.ship(stage_keys, specs, self.code)
        forget_stages: list[str] = []
        forget_code: list[str] = []
        if len(record.shipped) > self.settings.executor_stage_cache:
            forget_stages, forget_code = record.shipped.evict(self.settings.executor_stage_cache, stage_keys | self._stages_in_flight())
        return Shipment(stages, code, forget_stages, forget_code)

    def _stages_in_flight(self) -> set[str]:
        keys = {key for _, job in self.prescheduled.values() for key in job.stage_keys}
        keys.update(key for _, job in self.bsp_jobs.values() for key in job.stage_keys)
        return keys

    def _release(self, job_ids: list[str], executor_ids: list[str], superseded: bool = False) -> list[Action]:
        if not job_ids:
            return []
        actions: list[Action] = [ToShuffleMeta(ForgetJob(job_ids=job_ids))]
        for executor_id in executor_ids:
            record = self.members.get(executor_id)
            if record is not None:
                actions.append(Send(record.peer, ReleaseJob(job_ids=job_ids, superseded=superseded)))
        return actions

    # --- keyed state ----------------------------------------------------------------------------

    def state_checkpointed(self, msg: StateCheckpointed) -> list[Action]:
        """Checkpoints were written; once every partition of a state has one at batch c or later,
        an executor deletes the map-output checkpoints of batches up to c."""
        actions: list[Action] = []
        live = self.members.live()
        for state_id, partition, batch in msg.checkpoints:
            oldest = self.book.checkpointed(state_id, partition, batch)
            if oldest is not None and live:
                actions.append(Send(live[0].peer, PruneCheckpoints(state_id=state_id, before=oldest + 1)))
        return actions

    def forget_states(self, msg: ForgetStates) -> list[Action]:
        """A stream ended: forget its states here and on every executor."""
        self.book.forget(msg.state_ids)
        for driver, states in list(self.driver_states.items()):
            states.difference_update(msg.state_ids)
            if not states:
                del self.driver_states[driver]
        return [Send(record.peer, msg) for record in self.members.live()]
