"""One typed settings object for every Squall process.

Every field can be overridden by an environment variable named ``SQUALL_<FIELD>`` in upper case
(``SQUALL_HEARTBEAT_INTERVAL=0.05``). Settings are passed around explicitly (injected), never read
from module constants, so tests and local clusters can run several configurations side by side.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields

from squall.common.checkpoint_store import default_checkpoint_dir

ENV_PREFIX = "SQUALL_"


class SettingsError(ValueError):
    """A setting has a value of the wrong type or outside its range."""


_POSITIVE_DURATIONS = (
    "group_max_seconds",
    "executor_switch_interval",
    "batch_max_suspension",
    "batch_slice",
    "heartbeat_interval",
    "hung_timeout",
    "join_timeout",
    "connect_timeout",
    "scheduler_silence_timeout",
    "result_wait",
    "shuffle_lookup_timeout",
    "shuffle_fetch_timeout",
    "handover_timeout",
    "decommission_timeout",
)
# Counts and their smallest allowed value.
_MINIMUMS = {
    "heartbeat_misses": 1,
    "group_size": 1,
    "executor_slots": 1,
    "executor_stage_cache": 1,
    "persist_memory": 0,
    "plan_cache_nodes": 1,
    "metrics_window": 1,
    "max_message_bytes": 1024,
    "checkpoint_every_groups": 1,
}
# Settings that name one of a few modes.
_CHOICES = {
    "bad_records": ("fail", "skip"),
    "reduce_placement": ("auto", "spread", "per_batch"),
    "replay": ("parallel", "single"),
    "log_format": ("auto", "json", "console"),
    "preemption": ("suspend", "kill", "none"),
    "lc_placement": ("load_balance", "random", "locality"),
    "batch_lane": ("process", "thread"),
}


@dataclass(frozen=True)
class Settings:
    """Every setting of Squall, typed and immutable; the comments below say what each one does.

    Settings() holds the defaults; Settings.from_env() reads SQUALL_<NAME> environment
    variables (e.g. SQUALL_HEARTBEAT_INTERVAL=0.5) over them; replace(**changes) makes a changed
    copy. A value of the wrong type or out of range raises SettingsError.
    """

    # Where the scheduler listens (bind) and where clients find it (connect).
    scheduler_bind: str = "tcp://127.0.0.1:7077"
    scheduler_address: str = "tcp://127.0.0.1:7077"
    # Where shuffle_meta listens, and where the scheduler tells executors to find it.
    shuffle_meta_bind: str = "tcp://127.0.0.1:7078"
    shuffle_meta_address: str = "tcp://127.0.0.1:7078"
    # Executors bind their block-serving socket here ("*" as port picks a free one) and advertise
    # it with this host (empty: the bound host), e.g. the pod IP on Kubernetes.
    executor_bind: str = "tcp://127.0.0.1:*"
    executor_advertise_host: str = ""
    # How many tasks the scheduler keeps in flight on one executor.
    executor_slots: int = 1
    # Scheduling modes. Pre-scheduling (Drizzle): reducers are placed before their mappers, which
    # push blocks straight to them; off means BSP (a stage is launched when the previous one is
    # done and reducers pull). group_size: micro-batches dispatched at once by run_jobs.
    preschedule: bool = True
    group_size: int = 10
    # Where pre-scheduled reducers go: "spread" (partition p on executor p mod n), "per_batch"
    # (all of batch b's on one executor, rotating; one message per mapper per batch), or "auto":
    # per_batch when a group has at least as many batches as there are executors.
    reduce_placement: str = "auto"
    # Streams with group_size="auto": keep the share of a group's time lost to coordination at
    # its boundary between these bounds (grow x2 above, shrink by 1 below), and never let a group
    # span more than group_max_seconds (it bounds how late a stream reacts to failures).
    group_overhead_lower: float = 0.05
    group_overhead_upper: float = 0.10
    group_max_seconds: float = 2.0
    # A record that makes a per-record user function (map, flat_map, filter) raise: "fail" the
    # job (a stream: stop it, naming the batch), or "skip" it and count it in the run's figures.
    bad_records: str = "fail"
    # Executors hold batch b+1's map tasks until their reduce tasks of batch b are done.
    barrier: bool = False
    # Map output blocks up to this size are pushed with the notice; larger ones are fetched.
    push_inline_max_bytes: int = 1024 * 1024
    # Stages whose tasks have taken less than this (seconds) run inline on the executor's loop
    # thread, saving a thread hand-off per task; longer ones run on the runner thread so that
    # heartbeats and block serving go on. 0 runs every task on the runner thread.
    inline_task_max: float = 0.002
    # How often (seconds) a busy runner thread hands the GIL to the executor's I/O loop, so pushes
    # and heartbeats are not held up behind user code (Python's default is 0.005).
    executor_switch_interval: float = 0.0005
    # Latency-critical and batch work on one executor. Every run has a priority: "latency"
    # (streams, run_jobs, iter_jobs) or "batch" (collect, count, reduce), unless told otherwise.
    # An executor runs one latency task and one batch task at a time. preemption, when a latency
    # task becomes runnable while a batch task runs there: "suspend" parks the batch task at its
    # next safe point (a few records on) and resumes it where it stopped once no latency task is
    # runnable; "kill" abandons it and runs it again later from its start (its work is thrown
    # away); "none" lets the latency task wait until the batch task is over. Every mode gives the
    # same results. A batch task is never starved: once latency work has kept it suspended for
    # batch_max_suspension seconds, it runs for batch_slice seconds before the next latency task.
    # Batch tasks run at batch_nice (Linux niceness, 0 for none), so that the operating system,
    # too, puts other executors' latency tasks first on a busy machine. batch_lane "process" runs
    # them in a child process of the executor, which "suspend" stops and continues (SIGSTOP,
    # SIGCONT): no batch task then holds the GIL that the executor's latency work needs.
    # "thread" runs them on a thread of the executor, parked at safe points; stateful batch tasks
    # (a batch-priority stream with keyed state) always run there, beside their tables.
    preemption: str = "suspend"
    batch_max_suspension: float = 0.2
    batch_slice: float = 0.002
    batch_nice: int = 19
    batch_lane: str = "process"
    # The batch process runs in Linux's SCHED_IDLE class: a CPU only when nothing else wants it,
    # and any other task that wakes up takes the CPU from it at once.
    batch_sched_idle: bool = True
    # Where latency tasks go: "load_balance" (executors running the least batch work first),
    # "random", or "locality" (where their input is: keyed-state partitions stay with their owner
    # under every policy). Batch tasks go first to executors running the least latency work.
    lc_placement: str = "load_balance"
    # Stragglers (Drizzle mode). A stateless micro-batch still running speculation_multiplier
    # times the median time of recent ones after it could start gets a copy on other executors;
    # the first to finish answers, the other is dropped. Jobs with keyed state are never copied
    # (a partition's owner moves only through recovery). Slow executors (from their group
    # reports) get a smaller share of the next groups' stateless tasks whether or not this is on.
    speculation: bool = True
    speculation_multiplier: float = 3.0
    # Membership: the scheduler pings each executor's process every interval over a connection
    # of its own (ZeroMQ heartbeats, answered without the GIL: a task holding it for minutes is no
    # death); a process silent for interval x misses (0.4 s by default; stopped, hung in the
    # kernel, or cut off) is dead, and a killed one is noticed at once, by its dropped connection.
    # Executors also beat every interval from a thread that needs the GIL: when its beats (or,
    # as they tell, its loop) stay silent past hung_timeout while its process answers, an executor
    # is reported hung (a warning log, and `hung` in the cluster status), its work left running.
    # Until the scheduler's connection to a newly registered executor is up, its own heartbeats
    # decide, and silence is death after join_timeout: a machine starting tens of executors at
    # once is slow to finish their handshakes and to run their heartbeat threads.
    heartbeat_interval: float = 0.1
    heartbeat_misses: int = 4
    hung_timeout: float = 10.0
    join_timeout: float = 5.0
    # Fault tolerance. Checkpoints (keyed state, and the map outputs that feed it) go to this
    # directory, shared by every executor (a shared volume on Kubernetes); empty: a "squall-
    # checkpoints" directory in the system's temporary directory. Keyed state is checkpointed at
    # the end of every checkpoint_every_groups-th group of a stream. When an executor dies its
    # lost work is replayed by all survivors ("parallel"), or by one ("single", for comparison).
    checkpoint_dir: str = ""
    checkpoint_every_groups: int = 10
    # Write the map outputs that feed keyed state to the checkpoint store (in the background), so
    # a rebuild reads them instead of recomputing them from the source. It costs the executors
    # a file per map task; off, rebuilds recompute (same output, more CPU during recovery).
    checkpoint_map_outputs: bool = True
    replay: str = "parallel"
    # Scaling. Keyed state partitions are spread evenly over the executors: when executors join
    # or leave, partitions move at a group boundary, checkpointed by their old owner after its
    # last batch and restored by the new one (no replay). A handover whose checkpoint is not in
    # within handover_timeout is abandoned (the partition stays). An executor told to leave
    # (SIGTERM, `squall decommission`) exits on its own, as a lost executor, if the scheduler
    # has not let it go within decommission_timeout.
    rebalance_state: bool = True
    handover_timeout: float = 10.0
    decommission_timeout: float = 30.0
    # Clients: how long connect() waits for the scheduler, and how long a silent scheduler is
    # tolerated while a job runs before the driver gives up.
    connect_timeout: float = 5.0
    scheduler_silence_timeout: float = 10.0
    # Drizzle results go from the executors straight to the driver, which binds a socket for
    # them, reachable at driver_host (empty: the address it reaches the scheduler from;
    # loopback for a local cluster). False: through the scheduler. After the scheduler says a
    # run is over, the driver waits up to result_wait for results still on their way.
    direct_results: bool = True
    driver_host: str = ""
    result_wait: float = 10.0
    # A driver waiting over a second for run_jobs (collect, count, ...) shows a progress bar on
    # stderr when stderr is a terminal: tasks done per stage, polled from the scheduler.
    progress_bar: bool = True
    # Shuffle: how long a reducer waits for map output locations and for block fetches.
    shuffle_lookup_timeout: float = 10.0
    shuffle_fetch_timeout: float = 10.0
    # Security: every socket speaks CurveZMQ with the cluster's key pair (z85 text, from
    # `squall keys`), and services admit only peers that prove they hold it. Plaintext is allowed
    # only when set explicitly, and only on loopback addresses. A local cluster makes its own keys.
    curve_public_key: str = ""
    curve_secret_key: str = ""
    plaintext: bool = False
    # Wire: the largest message (all frames together) a service accepts.
    max_message_bytes: int = 256 * 1024 * 1024
    # Stage specs an executor keeps (with the code they use): past this, the scheduler has it
    # forget the least recently used ones that no job in flight uses; they are sent again if needed.
    executor_stage_cache: int = 256
    # Persisted datasets (Dataset.persist): the bytes of serialized partitions an executor keeps.
    # Past it, the least recently used partitions are dropped (and computed again from their
    # lineage when a job needs them); a partition larger than all of it is never kept.
    persist_memory: int = 512 * 1024 * 1024
    # Plan deltas: a driver sends the scheduler only the plan nodes it has not sent before (and
    # the ids of the rest), so submitting a job costs the same however long its lineage. False:
    # the whole plan every job (for comparison). The scheduler keeps this many nodes, least
    # recently used first out; a job naming a node it dropped is sent again whole.
    plan_deltas: bool = True
    plan_cache_nodes: int = 100_000
    # Streams keep the most recent this-many samples of each metric series (batch and window
    # latencies, group sizes): their percentiles describe the recent past (100 s of 100 ms
    # batches), in constant memory that fills within a stream's first minutes.
    metrics_window: int = 1_000
    # Every service hands the free pages of its C heap back to the operating system this often
    # (seconds; glibc's malloc_trim, a no-op elsewhere), and has blocks of 128 KiB and more mapped
    # on their own, so that the holes message buffers of many sizes leave in malloc's heaps do not
    # make a long-running process grow (common/c_heap.py). 0: neither.
    memory_trim_interval: float = 30.0
    # Logging: "auto" is JSON when stderr is not a terminal, console otherwise.
    # Observability. Every service serves Prometheus metrics over HTTP at /metrics on
    # metrics_bind:metrics_port (0: a free port, chosen at start and logged; -1: none); the
    # scheduler serves a read-only live dashboard on dashboard_bind:dashboard_port (-1: none).
    # Both bind loopback unless told otherwise, and reveal no key material.
    metrics_port: int = 0
    metrics_bind: str = "127.0.0.1"
    dashboard_port: int = 8790
    dashboard_bind: str = "127.0.0.1"
    log_level: str = "info"
    log_format: str = "auto"
    # Services started by a local cluster exit when this process disappears (0: disabled).
    parent_pid: int = 0

    def __post_init__(self) -> None:
        for name in _POSITIVE_DURATIONS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be a positive number of seconds, got {value!r}")
        for name, minimum in _MINIMUMS.items():
            if getattr(self, name) < minimum:
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be at least {minimum}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be {', '.join(choices[:-1])} or {choices[-1]}")
        if not (0 <= self.group_overhead_lower < self.group_overhead_upper <= 1):
            raise SettingsError("group_overhead_lower < group_overhead_upper must both lie in [0, 1]")
        if self.memory_trim_interval < 0:
            raise SettingsError("memory_trim_interval (SQUALL_MEMORY_TRIM_INTERVAL) must not be negative")
        if not (0 <= self.batch_nice <= 19):
            raise SettingsError("batch_nice (SQUALL_BATCH_NICE) must be between 0 and 19")
        if not (0 <= self.inline_task_max <= 1):
            raise SettingsError("inline_task_max (SQUALL_INLINE_TASK_MAX) must be between 0 and 1 second")
        if not (isinstance(self.speculation_multiplier, int | float) and math.isfinite(self.speculation_multiplier)
                and self.speculation_multiplier >= 1):
            raise SettingsError("speculation_multiplier (SQUALL_SPECULATION_MULTIPLIER) must be a number of at least 1")
        for name in ("metrics_port", "dashboard_port"):
            if not -1 <= getattr(self, name) <= 65535:
                raise SettingsError(f"{name} ({ENV_PREFIX}{name.upper()}) must be a port (0: any free one; -1: none)")
        if self.push_inline_max_bytes < 0:
            raise SettingsError("push_inline_max_bytes (SQUALL_PUSH_INLINE_MAX_BYTES) must not be negative")

    @property
    def checkpoint_root(self) -> str:
        """The checkpoint directory in use: checkpoint_dir, or the default under the temp directory."""
        return self.checkpoint_dir or default_checkpoint_dir()

    @property
    def death_timeout(self) -> float:
        """Seconds of silence after which an executor is declared dead."""
        return self.heartbeat_interval * self.heartbeat_misses

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``SQUALL_*`` variables, then explicit keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, hints[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes` (setting name -> value) applied, checked like the original."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The ``SQUALL_*`` variables that reproduce these settings in a child process."""
        out = {}
        for f in fields(self):
            out[ENV_PREFIX + f.name.upper()] = str(getattr(self, f.name))
        return out


def env_names() -> set[str]:
    """Every environment variable name that maps to a setting."""
    return {ENV_PREFIX + f.name.upper() for f in fields(Settings)}


def _parse(name: str, hint: object, raw: str) -> object:
    try:
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {hint}") from None
