"""The scheduler's pure core: events in, actions out, no sockets (tested without them).

Membership: executors register and heartbeat; one silent for longer than the death timeout is
dead. Jobs (BSP mode): a submitted plan is split into stages; a stage's tasks are launched once
all its parent stages have finished; result partitions are relayed to the driver as they arrive.
A task failure or the loss of an executor the job depends on fails the job with a clear reason;
other jobs and the cluster go on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from common.plan import PlanError
from common.protocol import (
    ClusterStatus,
    ExecutorInfo,
    FailureKind,
    ForgetExecutor,
    ForgetJob,
    Heartbeat,
    JobAccepted,
    JobDone,
    JobFailed,
    LaunchTasks,
    Message,
    PartitionResult,
    Registered,
    RegisterExecutor,
    ReleaseJob,
    Reregister,
    SubmitJob,
    TaskDescriptor,
    TaskFailed,
    TaskFinished,
)
from common.settings import Settings
from services.scheduler.jobs import JobRun, TaskKey
from services.scheduler.planner import plan_job


@dataclass(frozen=True)
class Send:
    """Send a message to the peer (driver or executor) with this routing identity."""

    peer: bytes
    msg: Message
    payloads: tuple[object, ...] = ()


@dataclass(frozen=True)
class ToShuffleMeta:
    msg: Message


Action = Send | ToShuffleMeta


@dataclass
class ExecutorRecord:
    executor_id: str
    peer: bytes
    data_address: str
    slots: int
    pid: int
    last_seen: float
    running: set[TaskKey] = field(default_factory=set)
    code: set[str] = field(default_factory=set)

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)


class SchedulerState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executors: dict[str, ExecutorRecord] = {}
        self.jobs: dict[str, JobRun] = {}
        self.pending: deque[TaskKey] = deque()
        self.lost: deque[tuple[str, str]] = deque(maxlen=1000)  # (executor_id, reason), for logs and tests

    # --- membership -----------------------------------------------------------------------------

    def register(self, peer: bytes, msg: RegisterExecutor, now: float) -> list[Action]:
        actions: list[Action] = []
        known = self.executors.get(msg.executor_id)
        if known is not None and known.peer == peer and known.data_address == msg.data_address:
            known.last_seen = now  # a retried registration of the same process
            return [Send(peer, Registered(executor_id=msg.executor_id, shuffle_meta_address=self.settings.shuffle_meta_address))]
        if known is not None:
            actions += self.executor_lost(msg.executor_id, "registered again (restarted)", now)
        self.executors[msg.executor_id] = ExecutorRecord(
            executor_id=msg.executor_id,
            peer=peer,
            data_address=msg.data_address,
            slots=msg.slots,
            pid=msg.pid,
            last_seen=now,
        )
        actions.append(
            Send(peer, Registered(executor_id=msg.executor_id, shuffle_meta_address=self.settings.shuffle_meta_address))
        )
        return actions + self.assign()

    def heartbeat(self, peer: bytes, msg: Heartbeat, now: float) -> list[Action]:
        record = self.executors.get(msg.executor_id)
        if record is None or record.peer != peer:
            return [Send(peer, Reregister(executor_id=msg.executor_id))]
        record.last_seen = now
        return []

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        timeout = self.settings.death_timeout
        for record in list(self.executors.values()):
            silent = now - record.last_seen
            if silent > timeout:
                actions += self.executor_lost(record.executor_id, f"no heartbeat for {silent:.2f}s", now)
        return actions

    def executor_lost(self, executor_id: str, reason: str, now: float) -> list[Action]:
        record = self.executors.pop(executor_id, None)
        if record is None:
            return []
        self.lost.append((executor_id, reason))
        actions: list[Action] = [ToShuffleMeta(ForgetExecutor(executor_id=executor_id))]
        for job in list(self.jobs.values()):
            hit = job.depends_on(executor_id)
            if hit is not None:
                stage_id, partition = hit
                message = (
                    f"executor {executor_id} was lost ({reason}) while job {job.job_id} needed "
                    f"its task or output (stage {stage_id}, partition {partition})"
                )
                actions += self._fail_job(job, "executor_lost", message, stage_id=stage_id, partition=partition)
        return actions + self.assign()

    def status(self) -> ClusterStatus:
        return ClusterStatus(
            executors=[
                ExecutorInfo(
                    executor_id=r.executor_id,
                    data_address=r.data_address,
                    slots=r.slots,
                    running=len(r.running),
                    pid=r.pid,
                )
                for r in self.executors.values()
            ],
            running_jobs=len(self.jobs),
        )

    # --- jobs -----------------------------------------------------------------------------------

    def submit(self, peer: bytes, msg: SubmitJob, now: float) -> list[Action]:
        if msg.job_id in self.jobs:
            return [Send(peer, JobFailed(job_id=msg.job_id, kind="plan", message=f"job id {msg.job_id} is already running"))]
        try:
            plan = plan_job(msg.plan)
        except PlanError as exc:
            return [Send(peer, JobFailed(job_id=msg.job_id, kind="plan", message=str(exc)))]
        if not self.executors:
            return [Send(peer, JobFailed(job_id=msg.job_id, kind="no_executors", message="no executors are registered with the scheduler"))]
        job = JobRun(job_id=msg.job_id, driver=peer, plan=plan, started=now)
        self.jobs[job.job_id] = job
        actions: list[Action] = [Send(peer, JobAccepted(job_id=job.job_id, stages=len(plan.stages), tasks=job.task_count))]
        self._launch_runnable(job)
        return actions + self.assign()

    def task_finished(self, msg: TaskFinished, payloads: list[object], now: float) -> list[Action]:
        key = (msg.job_id, msg.stage_id, msg.partition)
        self._free_slot(msg.executor_id, key)
        job = self.jobs.get(msg.job_id)
        if job is None or not self._is_current(job, msg.executor_id, msg.stage_id, msg.partition):
            return self.assign()  # a task of a job that already ended: nothing to record
        if job.is_result_stage(msg.stage_id) and len(payloads) != 1:
            message = f"executor {msg.executor_id} reported result partition {msg.partition} without its data"
            return self._fail_job(job, "task", message, stage_id=msg.stage_id, partition=msg.partition) + self.assign()
        actions: list[Action] = []
        progress = job.progress[msg.stage_id]
        progress.remaining.discard(msg.partition)
        if job.is_result_stage(msg.stage_id):
            actions.append(
                Send(job.driver, PartitionResult(job_id=job.job_id, partition=msg.partition), tuple(payloads))
            )
        if progress.done:
            if job.finished:
                actions.append(Send(job.driver, JobDone(job_id=job.job_id, elapsed=max(0.0, now - job.started))))
                actions += self._release(job)
            else:
                self._launch_runnable(job)
        return actions + self.assign()

    def task_failed(self, msg: TaskFailed, now: float) -> list[Action]:
        key = (msg.job_id, msg.stage_id, msg.partition)
        self._free_slot(msg.executor_id, key)
        job = self.jobs.get(msg.job_id)
        if job is None or not self._is_current(job, msg.executor_id, msg.stage_id, msg.partition):
            return self.assign()
        kind: FailureKind = "fetch" if msg.kind == "fetch" else "task"
        message = (
            f"task failed in job {msg.job_id}, stage {msg.stage_id}, partition {msg.partition} "
            f"on executor {msg.executor_id}: {msg.error_type}: {msg.message}"
        )
        actions = self._fail_job(
            job,
            kind,
            message,
            error_type=msg.error_type,
            traceback=msg.traceback,
            stage_id=msg.stage_id,
            partition=msg.partition,
        )
        return actions + self.assign()

    # --- placement ------------------------------------------------------------------------------

    def assign(self) -> list[Action]:
        """Hand pending tasks to executors with free slots, least loaded first."""
        batches: dict[str, list[TaskDescriptor]] = {}
        code: dict[str, dict] = {}
        while self.pending:
            candidates = [r for r in self.executors.values() if r.free_slots > 0]
            if not candidates:
                break
            record = min(candidates, key=lambda r: (len(r.running), r.executor_id))
            job_id, stage_id, partition = key = self.pending.popleft()
            job = self.jobs.get(job_id)
            if job is None:
                continue
            spec = job.plan.stages[stage_id].spec
            stage_key = job.stage_keys[stage_id]
            record.running.add(key)
            job.placed[(stage_id, partition)] = record.executor_id
            job.touched.add(record.executor_id)
            batches.setdefault(record.executor_id, []).append(
                TaskDescriptor(job_id=job_id, stage_id=stage_id, partition=partition, stage_key=stage_key)
            )
            if stage_key not in record.code:
                record.code.add(stage_key)
                code.setdefault(record.executor_id, {})[stage_key] = spec
        return [
            Send(self.executors[eid].peer, LaunchTasks(tasks=tasks, code=code.get(eid, {})))
            for eid, tasks in batches.items()
        ]

    def _launch_runnable(self, job: JobRun) -> None:
        for stage_id in job.runnable_stages():
            job.progress[stage_id].launched = True
            for partition in range(job.plan.stages[stage_id].spec.partitions):
                self.pending.append((job.job_id, stage_id, partition))

    def _free_slot(self, executor_id: str, key: TaskKey) -> None:
        record = self.executors.get(executor_id)
        if record is not None:
            record.running.discard(key)

    @staticmethod
    def _is_current(job: JobRun, executor_id: str, stage_id: int, partition: int) -> bool:
        if stage_id >= len(job.plan.stages):
            return False
        return job.placed.get((stage_id, partition)) == executor_id

    def _fail_job(self, job: JobRun, kind: FailureKind, message: str, **details: object) -> list[Action]:
        failed = JobFailed(job_id=job.job_id, kind=kind, message=message, **details)  # type: ignore[arg-type]
        return [Send(job.driver, failed), *self._release(job)]

    def _release(self, job: JobRun) -> list[Action]:
        self.jobs.pop(job.job_id, None)
        if any(k[0] == job.job_id for k in self.pending):
            self.pending = deque(k for k in self.pending if k[0] != job.job_id)
        actions: list[Action] = [ToShuffleMeta(ForgetJob(job_id=job.job_id))]
        for eid in sorted(job.touched):
            record = self.executors.get(eid)
            if record is not None:
                actions.append(Send(record.peer, ReleaseJob(job_id=job.job_id)))
        return actions
