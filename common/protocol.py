"""Every message Squall services exchange, and the one codec that frames them.

A message on the wire is a multipart ZeroMQ message: one header frame (a msgpack-encoded, tagged
struct from this module) followed by zero or more raw payload frames (compressed data blocks,
never decoded by services that only relay them). Anything that does not decode, does not
validate, has the wrong number of payload frames or exceeds the size limit raises
``ProtocolError``; services log it, answer with ``ErrorReply`` where they can, and keep serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct
from squall.common.plan import LogicalPlan, PlanDelta, StageSpec

Id = Annotated[str, Meta(min_length=1, max_length=128)]
Index = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]
Priority = Literal["latency", "batch"]  # a run's: latency-critical or batch work (Settings.preemption)


class ProtocolError(ValueError):
    """A message that does not decode or validate."""


def fits(payload_bytes: int, max_bytes: int) -> bool:
    """Whether payloads of this many bytes, plus room for a header, stay within the size limit."""
    header_allowance = min(16 * 1024, max_bytes // 4)
    return payload_bytes + header_allowance <= max_bytes


class Message(Struct, tag=True, frozen=True):
    """Base of every message. `payload_count` says how many raw frames follow the header."""

    def payload_count(self) -> int:
        return 0


# --- any service ---------------------------------------------------------------------------------


class Ping(Message, frozen=True):
    nonce: int = 0


class Pong(Message, frozen=True):
    """`incarnation` is new each time the service process starts: a driver that sees it change
    knows the scheduler restarted, and that the runs it had in flight there are gone."""

    nonce: int
    service: str
    incarnation: str = ""


class ErrorReply(Message, frozen=True):
    """Sent back to a peer whose message could not be processed."""

    reason: str
    request_id: int = 0


# --- driver <-> scheduler ------------------------------------------------------------------------


def _no_plan() -> LogicalPlan:
    return LogicalPlan(nodes=[])


class JobSpec(Struct, frozen=True):
    """One micro-batch (job) of a run: its id, its plan, and (streams) the wall-clock time before
    which its source tasks must not start: the end of the batch's interval, when its data is in.

    The plan comes whole (`plan`), or as a `delta` over the nodes the scheduler keeps from this
    driver's earlier jobs (Settings.plan_deltas); with a delta, `plan` is left empty."""

    job_id: Id
    plan: LogicalPlan = msgspec.field(default_factory=_no_plan)
    not_before: float = 0.0
    # A stream resuming on a restarted scheduler sends the batches since its states' checkpoint
    # again as replay_only jobs (with their batch numbers): they rebuild state, and output nothing.
    replay_only: bool = False
    batch: int = -1  # -1: first_batch plus the job's position among the run's other jobs
    delta: PlanDelta | None = None

    def __post_init__(self) -> None:
        if self.delta is not None and self.plan.nodes:
            raise ValueError(f"job {self.job_id} carries both a whole plan and a plan delta")

    def code_keys(self) -> set[str]:
        """The code this job names that must have been sent with it or before: its whole plan's,
        or the new nodes' of its delta (the code of the nodes it names by id came with them)."""
        return self.plan.code_keys() if self.delta is None else self.delta.code_keys()


class SubmitJobs(Message, frozen=True):
    """A run: jobs executed in order, dispatched `group_size` at a time when pre-scheduled.

    `code` carries the pickled code the plans name that this driver has not sent before.
    With `preschedule` off, every job runs in BSP mode (stage by stage) and groups do not apply.
    """

    run_id: Id
    jobs: list[JobSpec]
    code: dict[str, bytes] = {}
    group_size: Annotated[int, Meta(ge=1, le=100_000)] = 1
    preschedule: bool = True
    barrier: bool = False
    first_batch: Index = 0  # the first job's batch number (a stream's batch index), for errors and placement
    priority: Priority = "latency"  # its tasks' priority on the executors (Settings.preemption)
    # A stream resuming after a scheduler restart: state id -> the batch its checkpoints reach
    # (-1: none yet). States this scheduler does not know start from there, on new owners.
    resume_states: dict[str, int] = {}
    # Where executors send the run's results straight to the driver (its result socket), in
    # Drizzle mode; empty: through the scheduler, in one JobDone per job.
    result_to: str = ""
    # The stream whose group this run is (its runs in flight show under its name): "" for none.
    stream_id: str = ""


class CancelRun(Message, frozen=True):
    """The driver gave up on this run (Ctrl-C, an abandoned iterator, its context closed): its
    queued groups are dropped and its tasks in flight stopped (CancelJobs); RunDone follows."""

    run_id: Id


class JobDone(Message, frozen=True):
    """A job's whole result: one payload frame per result partition listed, in that order.

    `elapsed`: since the job was dispatched; `finished_at`: the scheduler's monotonic clock when the
    job's last result arrived there (differences between jobs give the time per batch). One message
    per job, not one per partition: the result is complete only when its last partition is in."""

    job_id: Id
    elapsed: Seconds
    partitions: list[int]
    finished_at: float = 0.0

    def payload_count(self) -> int:
        return len(self.partitions)


# "plan_cache_miss": the job's plan delta names nodes the scheduler no longer keeps (plan_cache_nodes);
# the driver sends that job again with its whole plan.
FailureKind = Literal["task", "executor_lost", "plan", "fetch", "no_executors", "missing_code", "cancelled", "plan_cache_miss"]


class JobFailed(Message, frozen=True):
    job_id: Id
    kind: FailureKind
    message: str
    error_type: str = ""
    traceback: str = ""
    stage_id: int = -1
    partition: int = -1
    batch: int = -1


class GroupStats(Struct, frozen=True):
    """What one group cost: jobs, executors, bytes of launch messages (and of code in them), time."""

    group_id: Index
    jobs: int
    executors: int
    launch_bytes: int
    code_bytes: int
    duration: Seconds
    skipped: int = 0


class RunDone(Message, frozen=True):
    run_id: Id
    groups: list[GroupStats] = []
    skipped: int = 0  # bad records skipped over the whole run (bad_records="skip")
    # For each keyed state the run used: the batch every partition has a checkpoint at or after
    # (-1: none yet). A driver resumes from there if the scheduler restarts.
    checkpoints: dict[str, int] = {}
    # Jobs whose every result partition executors sent straight to the driver (SubmitJobs.result_to):
    # a driver that has not got them all yet waits a while for them before failing the job.
    direct: list[str] = []


class GetMetrics(Message, frozen=True):
    pass


class Metrics(Message, frozen=True):
    """Counts of the messages the scheduler handled and sent, by type."""

    received: dict[str, int]
    sent: dict[str, int]


class StreamProgress(Message, frozen=True):
    """Driver -> scheduler, sent without waiting for an answer after each stream batch the driver
    delivered: what only the driver sees (latency to its sink, window latencies, records), for the
    scheduler's dashboard and metrics. -1 input_records: the driver cannot count them; -1
    source_lag: the source cannot tell how many records it holds unread. A stream runs as one run
    per group: `stream_id` names the stream, `run_id` the batch's run."""

    stream_id: Id
    run_id: Id
    batch: Index
    latency: Annotated[float, Meta(ge=0)]
    window_latencies: list[float] = []
    input_records: int = -1
    output_records: Index = 0
    group_size: Index = 0
    source_lag: int = -1


class GetSnapshot(Message, frozen=True):
    pass


class Snapshot(Message, frozen=True):
    """The cluster as the scheduler sees it (executors, streams with their recent batches, runs
    in flight, persisted datasets, recent events), JSON-encoded: the dashboard's and `squall
    status`'s one source (docs/observability.md gives its fields)."""

    json: bytes


class GetTracked(Message, frozen=True):
    """Any service: how many entries each of its per-job, per-batch and per-run tables holds
    (soak tests assert they stay bounded); with `heap`, also its live Python objects by type
    (costly: for diagnosis only)."""

    heap: bool = False


class Tracked(Message, frozen=True):
    service: str
    sizes: dict[str, int]
    heap: dict[str, int] = {}  # live objects by type name
    traced: dict[str, int] = {}  # bytes by allocation site "file:line", when the service runs under tracemalloc
    allocator: dict[str, int] = {}  # the allocators' and the cyclic GC's figures (common.tracked.memory_figures)
    counters: dict[str, float] = {}  # what the service has counted since it started (e.g. an executor's suspensions)


class GetClusterStatus(Message, frozen=True):
    pass


class ExecutorInfo(Struct, frozen=True):
    executor_id: str
    data_address: str
    slots: int
    running: int
    pid: int
    # Seconds since its heartbeats, or its loop, were last heard of. Its process is known alive
    # (ZeroMQ answers for it); past hung_timeout it is reported hung: `hung` names what it was
    # running ("" when it is not hung).
    silent_for: float = 0.0
    hung: str = ""
    # Its tasks as its last heartbeat told: latency and batch tasks launched there and not over,
    # and of the batch ones, how many are suspended.
    latency_tasks: int = 0
    batch_tasks: int = 0
    suspended_tasks: int = 0
    leaving: bool = False  # decommissioned: handing its work over before it goes


class ClusterStatus(Message, frozen=True):
    executors: list[ExecutorInfo]
    running_jobs: int


# --- executor <-> scheduler ----------------------------------------------------------------------


class RegisterExecutor(Message, frozen=True):
    """`incarnation` is new each time an executor process starts: the same id with another
    incarnation is a restarted executor, whose predecessor's work is lost."""

    executor_id: Id
    incarnation: Id
    data_address: str
    slots: Annotated[int, Meta(ge=1, le=1024)]
    pid: int = 0
    metrics_address: str = ""  # where it serves Prometheus metrics (http://host:port/metrics; "": none)


class Registered(Message, frozen=True):
    executor_id: Id
    shuffle_meta_address: str


class Reregister(Message, frozen=True):
    """The scheduler does not know (or has given up on) this executor: drop state, register again.
    `registration` echoes the beat's: an answer to a beat from before the executor's latest
    registration is stale (the scheduler has processed that registration since)."""

    executor_id: Id
    registration: Index = 0


class Heartbeat(Message, frozen=True):
    """Sent from the executor's heartbeat thread, on its own socket. `registration` counts the
    executor's registrations (it registers again each time the scheduler gives up on it)."""

    executor_id: Id
    incarnation: Id
    registration: Index = 0
    # Seconds since the executor's loop last went round: it can be stuck while this thread beats.
    loop_silent: Annotated[float, Meta(ge=0)] = 0.0
    # Its tasks by priority (launched and not over), and suspended batch tasks, as its loop last saw them.
    latency_tasks: Index = 0
    batch_tasks: Index = 0
    suspended_tasks: Index = 0
    # The longest the beating thread woke late since the previous beat (it wakes many times
    # between two): a process stopped or starved of CPU for part of every moment wakes late
    # whatever its tasks take.
    stalled: Annotated[float, Meta(ge=0)] = 0.0
    # Its resident memory, and the bytes of persisted partitions it holds, in all and by dataset
    # (for the dashboard).
    memory_bytes: Index = 0
    persisted_bytes: Index = 0
    persisted: dict[str, int] = {}
    # Batch-priority tasks finished here, by "job wire id:stage", for jobs not released yet: how
    # far a long batch job has got before any executor reports its group (the progress bar).
    batch_done: dict[str, int] = {}


class TaskDescriptor(Struct, frozen=True, omit_defaults=True):  # most fields keep their default: not sent
    job_id: Id
    stage_id: Index
    partition: Index
    stage_key: str
    attempt: Index = 0
    # Pre-scheduled tasks only: the micro-batch's index in its run (orders the local scheduler),
    # and for a task that writes a shuffle, the block address of each reduce partition's executor.
    batch: Index = 0
    push_to: list[str] = []
    # On the wire inside a LaunchGroup: push_to is left empty and this indexes the launch's
    # `push_lists` instead (-1: push_to as it is). See LaunchGroup.compacted().
    push_list: int = -1
    # Wall-clock time (time.time()) before which a source task must not start (0: at once).
    not_before: float = 0.0
    # Fault tolerance. A stateful task with `checkpoint_state` snapshots its partition's state
    # after the batch and writes it to the checkpoint store. A map task with `map_checkpoint` (a
    # store key: its output feeds keyed state) writes its blocks there in the background, and on a
    # replay (attempt > 0) reads them back instead of recomputing when they exist. A `replay_only`
    # task rebuilds a stateful partition: its output goes nowhere.
    checkpoint_state: bool = False
    map_checkpoint: str = ""
    replay_only: bool = False
    # "latency" tasks run before, and suspend, "batch" tasks (Settings.preemption).
    priority: Priority = "latency"
    # Persisted datasets (PersistedInput) whose partition this task reads as a block: dataset id ->
    # the data address of the executor holding it (this executor's own: from its memory). Those
    # it is not told of, it computes from their fallback and keeps.
    persisted: dict[str, str] = {}
    # Drizzle result tasks of a run whose driver takes results directly: its result socket's
    # address, where the task sends its ResultPartition ("": to the scheduler).
    result_to: str = ""

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.job_id, self.stage_id, self.partition)


class LaunchTasks(Message, frozen=True):
    """BSP mode: tasks for one executor, plus the stage specs and code it has not seen yet."""

    tasks: list[TaskDescriptor]
    stages: dict[str, StageSpec] = {}
    code: dict[str, bytes] = {}
    # Stage specs and code to drop before taking this launch in (the scheduler's cache bound).
    forget_stages: list[str] = []
    forget_code: list[str] = []


class StateRestore(Struct, frozen=True):
    """Take over a stateful partition: load its newest checkpoint at or before `up_to` (none: start
    empty at `first_batch`); the replay tasks that follow bring it up to date."""

    state_id: Id
    partition: Index
    up_to: int  # the newest batch a checkpoint may have (-1: start empty)
    first_batch: Index = 0  # where the state starts when no checkpoint exists


class LaunchGroup(Message, frozen=True):
    """Drizzle mode: one executor's whole share of a group of micro-batches, sent at once.

    Reduce tasks wait for the blocks their mappers push; map tasks push to `push_to`. The
    executor reports once, with GroupDone, when every task here has finished or was released.
    `restores` (recovery) come before the tasks: stateful partitions this executor takes over.
    """

    group_id: Index
    tasks: list[TaskDescriptor]
    stages: dict[str, StageSpec] = {}
    code: dict[str, bytes] = {}
    # Stage specs and code to drop before taking this launch in (the scheduler's cache bound).
    forget_stages: list[str] = []
    forget_code: list[str] = []
    barrier: bool = False
    restores: list[StateRestore] = []
    # The distinct push_to lists of the tasks, each once, as indices into `addresses` (each
    # address once): every map task of a stage in a batch pushes to the same reducers, and with
    # reducers placed per batch all of a batch's are one address, so listing them per task made
    # a launch grow with map tasks x reducers (at 128 executors, 800 KB a micro-batch).
    addresses: list[str] = []
    push_lists: list[list[int]] = []

    def compacted(self, shared: PushListCodes | None = None) -> LaunchGroup:
        """This launch as sent: each task's push_to moved, once per distinct list, to push_lists.
        Launches of one group can share `shared`, so that each list is coded once per group."""
        codes = shared if shared is not None else PushListCodes()
        local: dict[int, int] = {}  # code list's id -> its index in this launch's push_lists
        push_lists: list[list[int]] = []
        tasks = []
        for task in self.tasks:
            if not task.push_to:
                tasks.append(task)
                continue
            coded = codes.code(task.push_to)
            at = local.get(id(coded))
            if at is None:
                at = local[id(coded)] = len(push_lists)
                push_lists.append(coded)
            tasks.append(msgspec.structs.replace(task, push_to=[], push_list=at))
        return msgspec.structs.replace(self, tasks=tasks, addresses=codes.addresses if push_lists else [], push_lists=push_lists)

    def expanded(self) -> LaunchGroup:
        """This launch as received, with each task's push_to back in place (the lists shared)."""
        if not self.push_lists:
            return self
        lists = [[self.addresses[i] for i in indices] for indices in self.push_lists]
        tasks = [msgspec.structs.replace(t, push_to=lists[t.push_list], push_list=-1) if t.push_list >= 0 else t for t in self.tasks]
        return msgspec.structs.replace(self, tasks=tasks, addresses=[], push_lists=[])


class PushListCodes:
    """Push-target lists coded as indices into one address table, each list object once: the
    scheduler shares one list among a stage's tasks, and the same lists recur in every executor's
    launch of a group (hashing a thousand addresses per task would cost what coding saves)."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self._address_index: dict[str, int] = {}
        self._by_id: dict[int, tuple[list[str], list[int]]] = {}  # id(list) -> (the list, kept alive; its code)
        self._by_content: dict[tuple[str, ...], list[int]] = {}

    def code(self, push_to: list[str]) -> list[int]:
        known = self._by_id.get(id(push_to))
        if known is None:
            key = tuple(push_to)  # equal lists (a stage's, batch after batch) share one code
            coded = self._by_content.get(key)
            if coded is None:
                index = self._address_index
                coded = []
                for address in push_to:
                    at = index.get(address)
                    if at is None:
                        at = index[address] = len(self.addresses)
                        self.addresses.append(address)
                    coded.append(at)
                self._by_content[key] = coded
            known = self._by_id[id(push_to)] = (push_to, coded)
        return known[1]


class GroupDone(Message, frozen=True):
    group_id: Index
    executor_id: Id
    tasks: Index
    busy: Seconds
    skipped: Index = 0  # bad records its tasks skipped (bad_records="skip")
    # Job (attempt id) -> the result partitions its tasks here sent straight to the driver: how
    # the scheduler learns that a job whose results bypass it is complete.
    results: dict[str, list[int]] = {}


class ResultPartition(Message, frozen=True):
    """Drizzle mode: a result task's records (one payload frame), sent to the scheduler, which
    relays the job's result, or straight to the driver (TaskDescriptor.result_to).

    `job_id` is the attempt's id (`job~epoch` for a replay); `attempt` is its epoch (0: the
    first), and `partitions` the job's count of result partitions: a driver taking results
    directly knows from these alone when an attempt's result is whole, and that a later
    attempt supersedes an earlier one."""

    executor_id: Id
    job_id: Id
    partition: Index
    attempt: Index = 0
    partitions: Index = 0

    @property
    def job(self) -> str:
        """The job's own id: the attempt id without its attempt (the scheduler's PlannedJob.wire_id)."""
        return self.job_id.partition("~")[0]

    def payload_count(self) -> int:
        return 1


class TaskFinished(Message, frozen=True):
    """A task completed. A result-stage task carries its records as one payload frame."""

    executor_id: Id
    job_id: Id
    stage_id: Index
    partition: Index
    attempt: Index
    has_result: bool
    output_bytes: Index
    elapsed: Seconds
    skipped: Index = 0

    def payload_count(self) -> int:
        return 1 if self.has_result else 0


class TaskFailed(Message, frozen=True):
    executor_id: Id
    job_id: Id
    stage_id: Index
    partition: Index
    attempt: Index
    # "block": a persisted block the task was told to read is gone (evicted, or its holder lost);
    # the scheduler plans the job again.
    kind: Literal["task", "fetch", "code", "block"]
    error_type: str
    message: str
    traceback: str = ""


class ReleaseJob(Message, frozen=True):
    """These jobs are over: drop their blocks, cancel their tasks still waiting for input.

    `superseded`: the jobs are being replayed under new attempt ids (recovery), so the outputs of
    stateful tasks they already applied are kept for the replay to take (state is never applied
    twice); otherwise those outputs are dropped too."""

    job_ids: list[str]
    superseded: bool = False


class CancelJobs(Message, frozen=True):
    """The run these jobs (attempt ids) belong to was cancelled: drop their queued tasks and blocks,
    and stop the running one at its next safe point (between two records). Nothing is reported
    for them but what frees a BSP slot; late messages about them find nothing and are dropped."""

    job_ids: list[str]


class StateCheckpointed(Message, frozen=True):
    """An executor wrote these state checkpoints: (state id, partition, batch) each."""

    executor_id: Id
    checkpoints: list[tuple[str, int, int]]


class PruneCheckpoints(Message, frozen=True):
    """Every partition of this state has a checkpoint at `before` or later: map-output
    checkpoints of earlier batches can go."""

    state_id: Id
    before: int


class ForgetStates(Message, frozen=True):
    """A stream ended: the scheduler drops what it kept to recover these states."""

    state_ids: list[str]


# --- scaling in and out (docs/fault-tolerance.md, "Scaling") ------------------------------------


class Decommission(Message, frozen=True):
    """Ask the scheduler to let an executor leave gracefully: no new work goes there, its keyed
    state partitions are handed over to the others, and once nothing of it is needed the
    executor is told to go (Leave). Sent by the executor itself (on SIGTERM) or by a person
    (`squall decommission`); answered with DecommissionAnswer."""

    executor_id: Id


class DecommissionAnswer(Message, frozen=True):
    """`accepted`: the executor is leaving (`partitions`: keyed state partitions it hands over);
    otherwise `reason` says why it may not (it is unknown, or the last executor taking work)."""

    executor_id: Id
    accepted: bool
    reason: str = ""
    partitions: Index = 0


class Leave(Message, frozen=True):
    """Scheduler -> a decommissioned executor: nothing of yours is needed any more, and you are
    no longer a member; exit."""

    executor_id: Id


class HandOverStates(Message, frozen=True):
    """Scheduler -> a keyed state partition's owner: checkpoint each (state id, partition) as it
    is after `batch`, its last batch here (now if applied already, else right after applying it).
    StateCheckpointed tells the scheduler, which then gives the partition to its new owner."""

    partitions: list[tuple[str, int, int]]  # (state id, partition, batch)


class HandedOver(Message, frozen=True):
    """Scheduler -> a former owner: these (state id, partition) live elsewhere now: drop them."""

    partitions: list[tuple[str, int]]


# --- shuffle_meta --------------------------------------------------------------------------------


class MapLocation(Struct, frozen=True):
    map_partition: Index
    executor_id: str
    address: str
    sizes: list[int]


class MapOutput(Struct, frozen=True):
    job_id: Id
    shuffle_id: Index
    location: MapLocation


class RegisterMapOutputs(Message, frozen=True):
    """Where map outputs live. BSP reducers look them up, so BSP sends each at once; pre-scheduled
    reducers were pushed their blocks, so executors send these once per group, for recovery."""

    outputs: list[MapOutput]


class LookupMapOutputs(Message, frozen=True):
    """Answered when `expected` map outputs are known, or with ErrorReply after a timeout."""

    request_id: Index
    job_id: Id
    shuffle_id: Index
    expected: Annotated[int, Meta(ge=1)]
    timeout: Seconds = 10.0


class MapOutputs(Message, frozen=True):
    request_id: Index
    locations: list[MapLocation]


class ForgetJob(Message, frozen=True):
    job_ids: list[str]


class ForgetExecutor(Message, frozen=True):
    executor_id: Id


# --- persisted datasets: the block directory (shuffle_meta) ------------------------------------


class PersistedBlock(Struct, frozen=True, array_like=True):
    """A partition of a persisted dataset an executor holds, of how many the dataset has, and its
    size in bytes."""

    dataset_id: Id
    partition: Index
    partitions: Annotated[int, Meta(ge=1)]
    size: Index = 0


class RegisterPersisted(Message, frozen=True):
    """Executor -> shuffle_meta: it now holds these blocks (reachable at `address`)."""

    executor_id: Id
    address: str
    blocks: list[PersistedBlock]


class DroppedPersisted(Message, frozen=True):
    """Executor -> shuffle_meta: it no longer holds these blocks (evicted to stay in its budget)."""

    executor_id: Id
    blocks: list[PersistedBlock]


class LookupPersisted(Message, frozen=True):
    """Scheduler -> shuffle_meta: which executors hold which partitions of these datasets."""

    request_id: Index
    dataset_ids: list[str]


class PersistedLocations(Message, frozen=True):
    """shuffle_meta -> scheduler: dataset id -> partition -> the executors holding it (a dataset
    or partition no one holds is left out), and each dataset's partition count."""

    request_id: Index
    holders: dict[str, dict[int, list[str]]]
    partitions: dict[str, int] = {}


class ForgetPersisted(Message, frozen=True):
    """Drop these persisted datasets: driver -> scheduler (Dataset.unpersist), which tells
    shuffle_meta and every executor."""

    dataset_ids: list[str]


# --- executor <-> executor -----------------------------------------------------------------------


class FetchPersisted(Message, frozen=True):
    """Ask a holder for a persisted block; the answer is a PersistedData, or an ErrorReply with
    this request id when the holder no longer has it."""

    request_id: Index
    dataset_id: Id
    partition: Index


class PersistedData(Message, frozen=True):
    """A persisted block, in one payload frame."""

    request_id: Index

    def payload_count(self) -> int:
        return 1


class FetchBlocks(Message, frozen=True):
    request_id: Index
    job_id: Id
    shuffle_id: Index
    reduce_partition: Index
    map_partitions: list[int]


class Blocks(Message, frozen=True):
    """One payload frame per map partition, in the order listed."""

    request_id: Index
    map_partitions: list[int]

    def payload_count(self) -> int:
        return len(self.map_partitions)


class MapperBlocks(Message, frozen=True):
    """Drizzle mode: a mapper tells a pre-scheduled reducer of its blocks for the listed reduce
    partitions, pushing them (PushBlocks) or saying where to fetch them (BlocksReady)."""

    job_id: Id
    shuffle_id: Index
    map_partition: Index
    reduce_partitions: list[int]


class PushBlocks(MapperBlocks, frozen=True):
    """The blocks themselves, one payload frame per reduce partition."""

    def payload_count(self) -> int:
        return len(self.reduce_partitions)


class BlocksReady(MapperBlocks, frozen=True):
    """Blocks too large to push: the reducer fetches them from `address`."""

    address: str


AnyMessage = (
    Ping
    | Pong
    | ErrorReply
    | SubmitJobs
    | CancelRun
    | JobDone
    | JobFailed
    | RunDone
    | GetMetrics
    | Metrics
    | GetTracked
    | Tracked
    | StreamProgress
    | GetSnapshot
    | Snapshot
    | GetClusterStatus
    | ClusterStatus
    | RegisterExecutor
    | Registered
    | Reregister
    | Heartbeat
    | LaunchTasks
    | LaunchGroup
    | GroupDone
    | ResultPartition
    | TaskFinished
    | TaskFailed
    | ReleaseJob
    | CancelJobs
    | StateCheckpointed
    | PruneCheckpoints
    | ForgetStates
    | Decommission
    | DecommissionAnswer
    | Leave
    | HandOverStates
    | HandedOver
    | RegisterMapOutputs
    | LookupMapOutputs
    | MapOutputs
    | ForgetJob
    | ForgetExecutor
    | FetchBlocks
    | Blocks
    | PushBlocks
    | BlocksReady
    | RegisterPersisted
    | DroppedPersisted
    | LookupPersisted
    | PersistedLocations
    | ForgetPersisted
    | FetchPersisted
    | PersistedData
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)


def encode(msg: Message, payloads: Sequence[object] = ()) -> list[object]:
    """Header frame plus payload frames (bytes, memoryviews or zmq.Frames, passed through)."""
    if len(payloads) != msg.payload_count():
        raise ProtocolError(
            f"{type(msg).__name__} needs {msg.payload_count()} payload frames, got {len(payloads)}"
        )
    return [_encoder.encode(msg), *payloads]


def decode(frames: Sequence[object], max_bytes: int) -> tuple[Message, list[object]]:
    """Header and payload frames back into a validated message. Raises ProtocolError."""
    if not frames:
        raise ProtocolError("empty message")
    total = frames_size(frames)
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the limit of {max_bytes}")
    header = frames[0]
    try:
        msg = _decoder.decode(payload_bytes(header))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"undecodable header: {exc}") from None
    except Exception as exc:  # a __post_init__ of a nested struct, for instance
        raise ProtocolError(f"invalid message: {type(exc).__name__}: {exc}") from None
    payloads = list(frames[1:])
    if len(payloads) != msg.payload_count():
        raise ProtocolError(
            f"{type(msg).__name__} expects {msg.payload_count()} payload frames, got {len(payloads)}"
        )
    return msg, payloads


def frames_size(frames: Sequence[object]) -> int:
    try:
        return sum(map(len, frames))  # type: ignore[arg-type]
    except TypeError:  # zmq.Frame objects
        return sum(_frame_len(f) for f in frames)


def _frame_len(frame: object) -> int:
    if hasattr(frame, "buffer"):
        return len(frame.buffer)  # zmq.Frame
    return len(frame)  # type: ignore[arg-type]


def payload_bytes(frame: object) -> bytes | memoryview:
    """The contents of a payload frame, without copying where possible."""
    if hasattr(frame, "buffer"):
        return frame.buffer  # type: ignore[no-any-return]
    return frame  # type: ignore[return-value]
