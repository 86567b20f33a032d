"""Drizzle mode of the scheduler (pre-scheduled groups): every task of every job of a group of
micro-batches is placed at once and each executor gets one LaunchGroup; mappers push to reducers
directly, results go straight to the driver (direct_results.py) or are relayed by the scheduler
as they arrive, and each executor reports once per group (GroupDone). A collaborator of SchedulerState (state.py), like bsp_mode.py; pure.

When an executor dies, a run with tasks there replays its unfinished jobs on the survivors under
new attempt ids (the epoch moves on, so the dead attempts' messages are stale), and keyed state
the executor owned is rebuilt by new owners from checkpoints (keyed_state.py). Each job's result
still reaches the driver exactly once.

Late jobs get speculative copies on other executors, and executors that were slow get a smaller
share of the next groups (stragglers: speculation.py, speeds.py).

What is not Drizzle's own, the state lends it as three functions: `ship` (the stage specs and
code an executor lacks), `release` (executors and shuffle_meta may drop what they hold of jobs)
and `advance` (move a run on: its next groups, or its end).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from squall.common.core import Log, Send
from squall.common.protocol import (
    FailureKind,
    GroupDone,
    JobFailed,
    LaunchGroup,
    PushListCodes,
    ResultPartition,
    StateRestore,
    TaskFailed,
    encode,
    frames_size,
)
from squall.common.settings import Settings
from squall.services.scheduler.direct_results import address_results, take_report
from squall.services.scheduler.events import Instruction
from squall.services.scheduler.groups import GroupRun, PlannedJob, place_group
from squall.services.scheduler.job_results import job_done, result_blocks, result_too_large
from squall.services.scheduler.keyed_state import Restore, StateBook
from squall.services.scheduler.membership import ExecutorRecord, Membership
from squall.services.scheduler.placement import PlacementPolicy
from squall.services.scheduler.runs import SubmittedRun
from squall.services.scheduler.shipped import Ship
from squall.services.scheduler.speculation import Speculation
from squall.services.scheduler.speeds import ExecutorSpeeds

# Keep the next group of a run in flight behind the current one, so that executors never wait at a
# group boundary; the scheduler still acts only when a group is dispatched or done.
GROUPS_IN_FLIGHT = 2

Release = Callable[..., list[Instruction]]  # (job ids, executor ids, superseded=False)
Advance = Callable[[SubmittedRun, float], list[Instruction]]
# Asked before each group goes out, with its first job: (hold the group back, instructions).
BeforeGroup = Callable[[SubmittedRun, PlannedJob, float], tuple[bool, list[Instruction]]]


class DrizzleMode:
    def __init__(self, settings: Settings, members: Membership, book: StateBook, placement: PlacementPolicy,
                 runs: dict[str, SubmittedRun], ship: Ship, release: Release, advance: Advance, clock_offset: float = 0.0) -> None:
        self.settings = settings
        self.members = members
        self.book = book
        self.placement = placement
        self.runs = runs  # the state's: read here, to find a group and the runs an executor's loss hits
        self._ship = ship
        self._release = release
        self._advance = advance
        self.prescheduled: dict[str, tuple[SubmittedRun, PlannedJob]] = {}  # attempt id -> its run and job, while in flight
        self.epoch = 0  # moves on at each recovery: replays get attempt ids of the new epoch
        self._group_ids = 0
        self.speeds = ExecutorSpeeds()  # from GroupDone reports: shrinks slow executors' shares
        self.speculation = Speculation(settings.speculation, settings.speculation_multiplier, clock_offset)
        # Moving keyed state between executors (handover.py) may hold a run's next group back.
        self.before_group: BeforeGroup = lambda run, job, now: (False, [])
        # Told of every group of first attempts that goes out: (run id, its jobs' (batch, batch
        # end as wall clock), now). The scheduler's Observatory takes it (scheduling delay).
        self.launched: Callable[[str, list[tuple[int, float]], float], None] = lambda run_id, batches, now: None

    def dispatch(self, run: SubmittedRun, now: float) -> list[Instruction]:
        """Start the run's next groups, up to GROUPS_IN_FLIGHT."""
        dispatched: list[Instruction] = []
        while run.queue and run.groups_in_flight < GROUPS_IN_FLIGHT:
            if any(job.needs_blocks for job in itertools.islice(run.queue, run.group_size)):
                return dispatched + self._advance(run, now)  # planned first, around the blocks held then
            hold, handing_over = self.before_group(run, run.queue[0], now)
            dispatched += handing_over
            if hold:
                return dispatched  # dispatched again when the handover is safe
            dispatched += self._dispatch_group(run, now)
        return dispatched

    def _dispatch_group(self, run: SubmittedRun, now: float) -> list[Instruction]:
        jobs = [run.queue.popleft() for _ in range(min(run.group_size, len(run.queue)))]
        restores, replayed, error = self.book.pending_restores(jobs[0])
        if error is not None:
            failed: list[Instruction] = []
            for job in [*jobs, *run.queue]:
                failed.append(Send(run.driver, JobFailed(job_id=job.job_id, kind="executor_lost", message=error, batch=job.batch)))
            run.queue.clear()
            return failed + self._advance(run, now)  # ends the run (RunDone) once nothing is in flight
        instructions: list[Instruction] = []
        if replayed:
            self.epoch += 1
            rebuild = [job.fork(self.epoch, replay_only=True, restrict=self.book.replay_partitions(job, restores)) for job in replayed]
            rebuild = [job for job in rebuild if job.restrict]
            if rebuild:
                instructions += self._launch(run, rebuild, restores, set(), now)
                restores = []  # they travel with the rebuild group, ahead of the next
        return instructions + self._launch(run, jobs, restores, self.book.note_group(jobs), now)

    def _launch(self, run: SubmittedRun, jobs: list[PlannedJob], restores: list[Restore], checkpointing: set[str],
                now: float, on: list[ExecutorRecord] | None = None) -> list[Instruction]:
        """Place a group and send each executor its share (with the partitions it must restore).
        A group of first attempts takes executors in the placement policy's order for the run's
        priority, slow executors taking fewer of its stateless tasks (speeds.py); replays and
        rebuilds are spread over the survivors in id order, as ever; a speculative copy over
        the executors `on`."""
        self._group_ids += 1
        executors = on or self.members.placeable()
        replay_only = all(job.replay_only for job in jobs)
        if replay_only and self.settings.replay == "single" and restores:  # for comparison: one survivor rebuilds
            executors = [self.members.executors[restores[0].owner]]
        replaying = any(job.attempt for job in jobs)
        order = executors if replaying else self.speeds.weighted(
            self.speeds.without_stalled(self.placement.order(executors, run.priority, self._group_ids)))
        shares = place_group(jobs, executors, self.settings.reduce_placement, self.book, checkpointing,  # type: ignore[arg-type]
                             run.priority, order)
        for executor_id, tasks in shares.items():
            self.members.executors[executor_id].count_placed(run.priority, len(tasks))
        shares = address_results(shares, jobs, run.result_to)
        for r in restores:
            shares.setdefault(r.owner, [])
        group = GroupRun(self._group_ids, run.run_id, jobs, waiting=set(shares), started=now, replay_only=replay_only,
                         speculative=on is not None)
        run.groups.append(group)
        for job in jobs:
            job.started = now
            self.prescheduled[job.wire_id] = (run, job)
        if on is None and not replaying and not replay_only:
            self.launched(run.run_id, [(job.batch, job.not_before) for job in jobs], now)
        instructions: list[Instruction] = []
        specs = {key: s.spec for job in jobs for key, s in zip(job.stage_keys, job.plan.stages, strict=True)}
        push_codes = PushListCodes()  # each push-target list coded once for all the group's launches
        for executor_id, tasks in shares.items():
            record = self.members.executors[executor_id]
            shipment = self._ship(record.shipped, {t.stage_key for t in tasks}, specs)
            mine = [StateRestore(r.state_id, r.partition, r.up_to, r.first_batch) for r in restores if r.owner == executor_id]
            launch = LaunchGroup(group_id=group.group_id, tasks=tasks, stages=shipment.stages, code=shipment.code, barrier=run.barrier,
                                 restores=mine, forget_stages=shipment.forget_stages, forget_code=shipment.forget_code)
            frames = encode(launch.compacted(push_codes))  # encoded once: measured here, sent as is
            group.launch_bytes += frames_size(frames)
            group.code_bytes += sum(len(b) for b in shipment.code.values())
            instructions.append(Send(record.peer, launch, frames=frames))
        return instructions

    def result_partition(self, msg: ResultPartition, payloads: list[object], now: float) -> list[Instruction]:
        entry = self.prescheduled.get(msg.job_id)
        if entry is None:
            return []
        run, job = entry
        if job.replay_only or job.over or msg.partition in job.results or msg.partition >= job.plan.result_stage.spec.partitions:
            return []  # a duplicate or nonsensical report never completes a job early
        if self.speculation.answered(job):
            return []  # its other attempt answered first
        job.results[msg.partition] = payloads[0]
        if job.results_remaining:
            return []
        too_large = result_too_large(job.job_id, job.results, self.settings.max_message_bytes)
        if too_large:
            job.results.clear()
            return self._fail(run, job, "task", too_large, error_type="ResultTooLarge")
        job.done = True
        done: list[Instruction] = [Send(run.driver, job_done(job.job_id, job.results, job.started, now), result_blocks(job.results))]
        loser = self.speculation.finished(job, now)
        if loser is not None:  # its results, should any come, are ignored; its queued tasks go
            won: dict[str, object] = {"job": job.job_id, "winner": job.wire_id, "loser": loser.wire_id}
            done += [Log("info", "speculation_won" if job.speculative else "speculation_lost", won),
                     *self._release([loser.wire_id], sorted(loser.executors))]
        return done + self.speculate(now)

    def group_done(self, msg: GroupDone, now: float) -> list[Instruction]:
        self.speeds.observe(msg.executor_id, msg.tasks, msg.busy)
        for run in self.runs.values():
            for group in run.groups:
                if group.group_id == msg.group_id:
                    group.waiting.discard(msg.executor_id)
                    group.skipped += msg.skipped
                    run.skipped += msg.skipped
                    run.direct += [job.job_id for job in take_report(msg, group.jobs)]
                    return self._maybe_group_complete(run, group, now) + self.speculate(now)
        return []

    def _maybe_group_complete(self, run: SubmittedRun, group: GroupRun, now: float) -> list[Instruction]:
        if group.waiting or group not in run.groups:
            return []
        run.groups.remove(group)
        run.stats.append(group.stats(now, executors=len({e for j in group.jobs for e in j.executors})))
        instructions: list[Instruction] = []
        for job in group.jobs:
            self.prescheduled.pop(job.wire_id, None)
            if job.replay_only:
                job.done = True
            if job.speculative and not job.over:  # a copy that could not finish: its job's first attempt answers
                job.failed = True
            if not job.over:  # every executor reported, yet results are missing: never silently drop
                message = f"batch {job.batch} (job {job.job_id}) ended with {job.results_remaining} result partitions missing"
                job.failed = True
                instructions.append(Send(run.driver, JobFailed(job_id=job.job_id, kind="task", message=message, batch=job.batch)))
        job_ids = [j.wire_id for j in group.jobs]
        involved = sorted({e for j in group.jobs for e in j.executors})
        instructions += self._release(job_ids, involved)
        return instructions + self._advance(run, now)

    def _fail(self, run: SubmittedRun, job: PlannedJob, kind: FailureKind, message: str, **details: object) -> list[Instruction]:
        job.failed = True
        failed = JobFailed(job_id=job.job_id, kind=kind, message=message, batch=job.batch, **details)  # type: ignore[arg-type]
        return [Send(run.driver, failed), *self._release([job.wire_id], sorted(job.executors))]

    def task_failed(self, msg: TaskFailed, kind: FailureKind, where: str, details: dict[str, object]) -> list[Instruction] | None:
        """A task of a pre-scheduled job failed: its job fails (None: no such job in flight)."""
        entry = self.prescheduled.get(msg.job_id)
        if entry is None:
            return None
        run, job = entry
        if job.over:
            return []
        if job.speculative:  # the copy is abandoned; the job's first attempt goes on
            job.failed = True
            abandoned = Log("info", "speculation_failed", {"job": job.job_id, "copy": job.wire_id, "reason": f"{msg.error_type}: {msg.message}"})
            return [abandoned, *self._release([job.wire_id], sorted(job.executors))]
        if job.replay_only:  # keyed state could not be rebuilt: the next batch of the run fails
            message = f"rebuilding keyed state by replaying batch {job.batch} failed, {where}: {msg.error_type}: {msg.message}"
            job.failed = True
            nxt = next((j for g in run.groups for j in g.jobs if not j.replay_only and not j.over), None)
            return self._fail(run, nxt, kind, message, **details) if nxt is not None else []
        message = f"task failed in batch {job.batch} (job {job.job_id}), {where}: {msg.error_type}: {msg.message}"
        return self._fail(run, job, kind, message, **details)

    def replan(self, msg: TaskFailed, now: float) -> list[Instruction] | None:
        """A task found a persisted block it was placed to read gone (evicted, or its holder
        lost): the run's unfinished jobs go again as new attempts, each planned afresh around the
        blocks held now (None: no such job in flight)."""
        entry = self.prescheduled.get(msg.job_id)
        if entry is None:
            return None
        run, job = entry
        if job.over:
            return []
        job.replans += 1  # its next attempt inherits the count; past a bound, it reads no blocks
        lost = Log("info", "block_lost", {"job": job.job_id, "stage": msg.stage_id, "partition": msg.partition,
                                          "executor": msg.executor_id, "reason": msg.message})
        return [lost, *self._replay_run(run, "", []), *self._advance(run, now)]

    def executor_lost(self, executor_id: str, why: str, moved: list[tuple[str, int, str]], now: float) -> list[Instruction]:
        """Runs with unfinished tasks there replay them on the survivors (or fail, with none left);
        groups stop waiting for its report."""
        survivors = bool(self.members.executors)
        self.speeds.forget(executor_id)
        instructions: list[Instruction] = []
        for run in list(self.runs.values()):
            instructions += self._abandon_copies(run, executor_id)
            hit = [j for g in run.groups for j in g.jobs if not j.over and executor_id in j.placed]
            if hit and not survivors:
                for job in hit:
                    first_stage = min(job.placed[executor_id])
                    message = f"{why} while batch {job.batch} (job {job.job_id}) had tasks there (from stage {first_stage}); no executors are left"
                    instructions += self._fail(run, job, "executor_lost", message, stage_id=first_stage)
            elif hit:
                instructions += self._replay_run(run, executor_id, moved)
                instructions += self._advance(run, now)
                continue
            for group in list(run.groups):
                group.waiting.discard(executor_id)
                instructions += self._maybe_group_complete(run, group, now)
        return instructions

    def _replay_run(self, run: SubmittedRun, executor_id: str, moved: list[tuple[str, int, str]]) -> list[Instruction]:
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
                (unfinished if not job.over and not job.replay_only and not job.speculative else over).append(job)
        involved = sorted({e for g in run.groups for j in g.jobs for e in j.executors} - {executor_id})
        run.groups.clear()
        released = self._release([j.wire_id for j in unfinished], involved, superseded=True)
        released += self._release([j.wire_id for j in over], involved)
        replays = [job.fork(self.epoch) for job in sorted(unfinished, key=lambda j: j.batch)]
        run.queue.extendleft(reversed(replays))
        return [Log("warning", "replaying", {
            "run": run.run_id, "executor": executor_id, "epoch": self.epoch,
            "batches": [j.batch for j in replays], "moved_partitions": len(moved), "survivors": len(self.members.executors),
            "new_owners": sorted({owner for _, _, owner in moved}),
        }), *released]

    def speculate(self, now: float) -> list[Instruction]:
        """Copy the jobs that are late (speculation.py) onto the executors their suspects are not."""
        if not self.speculation.enabled:
            return []
        self.speculation.prune(self.prescheduled)
        instructions: list[Instruction] = []
        for run, group, job in list(self.speculation.late(self.runs, now)):
            avoid = self.speculation.suspects(job, group, self.speeds)
            others = [r for r in self.members.placeable() if r.executor_id not in avoid]
            if not others:
                continue
            self.epoch += 1
            copy = job.fork(self.epoch)
            copy.speculative = True
            self.speculation.pair(job, copy)
            instructions.append(Log("info", "speculating", {"job": job.job_id, "batch": job.batch, "copy": copy.wire_id,
                                                            "late": round(now - self.speculation.ready_at(job), 4), "avoiding": sorted(avoid)}))
            instructions += self._launch(run, [copy], [], set(), now, on=others)
        return instructions

    def _abandon_copies(self, run: SubmittedRun, executor_id: str) -> list[Instruction]:
        """Speculative copies with tasks on a lost executor are given up (their jobs' first
        attempts answer, or are replayed with the rest of the run)."""
        lost = [j for g in run.groups if g.speculative for j in g.jobs if not j.over and executor_id in j.placed]
        for copy in lost:
            copy.failed = True
        return self._release([j.wire_id for j in lost], sorted({e for j in lost for e in j.executors} - {executor_id}))

    def work_on(self, executor_id: str) -> list[str]:
        """The jobs of groups in flight with tasks on the executor that it has not reported, for a person."""
        return [
            f"batch {job.batch} of run {run.run_id} (job {job.wire_id}, stages {sorted(job.placed[executor_id])})"
            for run in self.runs.values() for group in run.groups if executor_id in group.waiting
            for job in group.jobs if executor_id in job.placed and not job.over
        ]

    def stage_keys_in_flight(self) -> set[str]:
        return {key for _, job in self.prescheduled.values() for key in job.stage_keys}
