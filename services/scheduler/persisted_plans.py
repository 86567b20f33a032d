"""The scheduler's part in persisted datasets (Dataset.persist): pure, a collaborator of
SchedulerState (state.py), like drizzle_mode.py.

A job whose plan reaches persisted datasets is planned when it is about to go out, not when it
arrives: the block directory (shuffle_meta) is asked, in rounds, which executors hold which
partitions of the datasets at the plan's frontier (plan_sources.py), and the stages are planned
around the answer (the planner cuts the lineage of datasets held whole; groups.py places tasks
on holders). A look-up left unanswered past shuffle_lookup_timeout plans as if nothing were held:
slower, never wrong, never stuck. Unpersisted datasets are remembered (boundedly), so that a plan
still reaching one computes it without keeping it; each driver's datasets are dropped when it goes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from squall.common.core import Log, Send, ToShuffleMeta
from squall.common.plan import PlanError
from squall.common.protocol import ForgetPersisted, JobFailed, LookupPersisted, PersistedLocations
from squall.common.recent_ids import RecentIds
from squall.common.settings import Settings
from squall.services.scheduler.events import Instruction
from squall.services.scheduler.groups import PlannedJob
from squall.services.scheduler.keyed_state import StateBook
from squall.services.scheduler.membership import Membership
from squall.services.scheduler.plan_cache import MissingNodes
from squall.services.scheduler.planner import plan_job
from squall.services.scheduler.runs import SubmittedRun

# Plans a job again this many times when a persisted block it was placed to read is gone by the
# time it runs (evicted, or its holder lost); past this it computes everything from lineage.
MAX_REPLANS = 3

Advance = Callable[[SubmittedRun, float], list[Instruction]]


class PersistedPlans:
    def __init__(self, settings: Settings, members: Membership, book: StateBook, runs: dict[str, SubmittedRun],
                 advance: Advance) -> None:
        self.settings = settings
        self.members = members
        self.book = book
        self.runs = runs  # the state's: read here, to find the run a look-up's answer is for
        self._advance = advance
        # Each driver's persisted datasets (dropped when it goes), those unpersisted (planned as
        # if never persisted, should a plan still reach them), and the block directory look-ups
        # in flight: request id -> (run, datasets asked about, when asked).
        self.driver_datasets: dict[bytes, set[str]] = {}
        self.unpersisted = RecentIds()
        self.lookups: dict[int, tuple[str, list[str], float]] = {}
        self._lookup_ids = 0

    def tracked(self) -> dict[str, int]:
        return {"driver_datasets": sum(len(d) for d in self.driver_datasets.values()), "block_lookups": len(self.lookups)}

    def validate(self) -> None:
        assert all(self.driver_datasets.values()), "a driver kept with no persisted dataset"

    def driver_gone(self, driver: bytes) -> list[Instruction]:
        """A driver's connection is gone: its persisted datasets are dropped (no one can read them)."""
        datasets = self.driver_datasets.pop(driver, set())
        return self.forget(sorted(datasets)) if datasets else []

    def plan_next(self, run: SubmittedRun, now: float) -> list[Instruction] | None:
        """Plan the jobs that go out next (a group, or a BSP job) whose plans reach persisted
        datasets: None when they all are; else the look-ups to wait for (or, if some failed to
        plan, their failures and the run moved on)."""
        count = run.group_size if run.preschedule else 1
        waiting = [job for job in itertools.islice(run.queue, count) if job.needs_blocks]
        if not waiting:
            return None
        if any(entry[0] == run.run_id for entry in self.lookups.values()):
            return []  # its answer plans them
        ask: set[str] = set()
        failed: list[Instruction] = []
        for job in waiting:
            try:
                unknown = self._unknown_datasets(job)
            except MissingNodes as exc:  # evicted since it came: the driver sends the job again, whole
                job.failed = True
                failed.append(Send(run.driver, JobFailed(job_id=job.job_id, kind="plan_cache_miss", message=str(exc), batch=job.batch)))
                continue
            if unknown:
                ask |= unknown
                continue
            failure = self._plan_around_blocks(run, job)
            if failure is not None:
                failed.append(failure)
        if failed:
            run.queue = deque(job for job in run.queue if not job.failed)
            return failed + self._advance(run, now)
        if not ask:
            return None
        self._lookup_ids += 1
        self.lookups[self._lookup_ids] = (run.run_id, sorted(ask), now)
        return [ToShuffleMeta(LookupPersisted(request_id=self._lookup_ids, dataset_ids=sorted(ask)))]

    def _unknown_datasets(self, job: PlannedJob) -> set[str]:
        """The persisted datasets the job reaches that the directory has not been asked about
        (unpersisted ones are known at once: as not held). Past MAX_REPLANS nothing is asked:
        every dataset is computed from its lineage."""
        assert job.source is not None
        while True:
            unknown = job.source.persisted(job.known)
            settled = {d for d in unknown if d in self.unpersisted or job.replans > MAX_REPLANS}
            if not settled:
                return unknown
            for dataset_id in settled:
                job.known[dataset_id] = 0

    def _plan_around_blocks(self, run: SubmittedRun, job: PlannedJob) -> Instruction | None:
        """Plan a job's stages with the datasets held whole cut out of its lineage; a plan that
        cannot run fails its job (returned)."""
        assert job.source is not None
        try:
            job.plan = plan_job(job.source.resolve(job.known), self.unpersisted)
        except MissingNodes as exc:
            job.failed = True
            return Send(run.driver, JobFailed(job_id=job.job_id, kind="plan_cache_miss", message=str(exc), batch=job.batch))
        except PlanError as exc:
            job.failed = True
            return Send(run.driver, JobFailed(job_id=job.job_id, kind="plan", message=str(exc), batch=job.batch))
        job.stage_keys = [stage.spec.key() for stage in job.plan.stages]
        job.needs_blocks = False
        self.book.register(job)
        run.state_ids |= self.book.state_ids(job)
        datasets = {d for d in job.known if d not in self.unpersisted}
        if datasets:
            self.driver_datasets.setdefault(run.driver, set()).update(datasets)
        return None

    def locations(self, msg: PersistedLocations, now: float) -> list[Instruction]:
        """The directory answered a look-up."""
        entry = self.lookups.pop(msg.request_id, None)
        if entry is None:
            return []  # answered after its deadline, or its run is gone
        return self._learn_blocks(entry[0], entry[1], msg.holders, msg.partitions, now)

    def _learn_blocks(self, run_id: str, asked: list[str], holders: dict[str, dict[int, list[str]]], partitions: dict[str, int],
                      now: float) -> list[Instruction]:
        """The directory's answer (or none, past the deadline): which partitions live executors
        hold. The run's waiting jobs take it in, and the run moves on."""
        run = self.runs.get(run_id)
        if run is None:
            return []
        live = self.members.executors
        for job in itertools.islice(run.queue, run.group_size if run.preschedule else 1):  # those that asked
            if not job.needs_blocks:
                continue
            for dataset_id in asked:
                held = {p: [e for e in es if e in live] for p, es in holders.get(dataset_id, {}).items()}
                held = {p: es for p, es in held.items() if es}
                count = partitions.get(dataset_id, 0)
                job.known[dataset_id] = count if count and all(p in held for p in range(count)) else 0
                if held:
                    job.blocks[dataset_id] = held
        return self._advance(run, now)

    def forget(self, dataset_ids: list[str]) -> list[Instruction]:
        """Datasets unpersisted (or of a driver gone): the directory and every executor drop their
        blocks, and later plans that still reach them pass them through."""
        if not dataset_ids:
            return []
        for dataset_id in dataset_ids:
            self.unpersisted.add(dataset_id)
        for driver, datasets in list(self.driver_datasets.items()):
            datasets.difference_update(dataset_ids)
            if not datasets:
                del self.driver_datasets[driver]
        forget = ForgetPersisted(dataset_ids=dataset_ids)
        return [ToShuffleMeta(forget), *(Send(record.peer, forget) for record in self.members.live())]

    def expire(self, now: float) -> list[Instruction]:
        """A look-up unanswered past shuffle_lookup_timeout (shuffle_meta down or restarting):
        plan as if nothing were held. Slower, never wrong, never stuck."""
        if not self.lookups:
            return []
        late = [rid for rid, (_, _, asked_at) in self.lookups.items() if now - asked_at > self.settings.shuffle_lookup_timeout]
        instructions: list[Instruction] = []
        for rid in late:
            run_id, asked, _ = self.lookups.pop(rid)
            instructions.append(Log("warning", "block_lookup_timed_out", {"run": run_id, "datasets": len(asked)}))
            instructions += self._learn_blocks(run_id, asked, {}, {}, now)
        return instructions
