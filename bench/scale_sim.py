"""Squall's cores at any cluster size, by discrete-event simulation: one real SchedulerState, N real
ExecutorStates and a real ShuffleMetaState, with the network and the tasks' run times modelled.

What is real: every decision (placement, groups, pre-scheduled reducers, BSP stage by stage,
map-output pushes and look-ups, heartbeats, ticks), every message (encoded with the protocol's
encoder and decoded on arrival, so its size is its size on the wire) and every task's output (the
task runs, once per distinct input: the micro-batches of a run read the same input, so later
runs of the same task reuse the first one's output), so the results the simulated driver gets are
the job's real results. What is modelled:

- the network: a message leaves its sender when the sender's link has sent what was queued before
  it (bytes / bandwidth), and arrives `latency` later, in order on each (sender, receiver) pair;
- task times: a map task takes `map_seconds`, a reduce task `reduce_seconds`, whatever the
  Python call cost here;
- each service is one loop: an event waits until the service has finished the previous one, and
  handling it takes the CPU time its core's handle() took here (time.process_time) (an executor's loop also runs its
  tasks inline, as the real one does with short latency tasks). So a scheduler that spends more per
  micro-batch as the cluster grows makes every micro-batch later, as it would on a real cluster.

The driver is the real one's plan-building (Context.range, Dataset, plan deltas) and result
assembly (ResultAssembly, loads_block) around a SubmitJobs built as squall.client builds it; it
answers nothing and costs nothing. Executors beat every heartbeat_interval and their watch
connection is reported up once the scheduler asks for it, so no executor is written off while a
run goes on.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import heapq
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from squall.common import protocol
from squall.common.core import Event, Log, Received, Send, Tick, ToShuffleMeta
from squall.common.protocol import (
    GroupDone,
    Heartbeat,
    JobDone,
    JobFailed,
    JobSpec,
    LaunchGroup,
    Message,
    ResultPartition,
    RunDone,
    SubmitJobs,
)
from squall.common.serialization import loads_block
from squall.services.executor.events import FromScheduler, HeldDue, Started, TaskCompleted
from squall.services.executor.instructions import Activate, Connect, RunTask, ToPeer, ToScheduler, WakeAt
from squall.services.executor.reports import Failure
from squall.services.executor.state import ExecutorState
from squall.services.executor.tasks import CodeCache, TaskOutput, run_task
from squall.services.scheduler.events import ExecutorConnected, ProbeDrivers, WatchExecutors
from squall.services.scheduler.server import TICK_SECONDS
from squall.services.scheduler.state import SchedulerState
from squall.services.shuffle_meta.state import ShuffleMetaState

from bench.microbench import batch_dataset
from bench.workloads import TWO_STAGE, expected_result
from squall import Context, Settings
from squall.result_assembly import ResultAssembly

# The CPU time of this process (not the wall clock): a handle() call the OS preempted on a busy
# machine costs what it computed, not what it waited.
cpu = time.process_time

SCHEDULER, SHUFFLE_META, DRIVER = "scheduler", "shuffle_meta", "driver"
DRIVER_RESULTS = "tcp://127.0.0.1:9"  # where executors send results straight to the driver
EXECUTOR_TICK = 0.05  # the executor server's tick
# Executors start this far apart: a thousand registering in the same instant would each be
# answered after all before it, past the death timeout for the last (real clusters come up over seconds).
START_APART = 0.002
NUMBERS_PER_MAP = 8  # each map task's input: tiny, its run time is modelled

MODES: dict[str, dict[str, Any]] = {
    "bsp": dict(preschedule=False, group_size=1),
    "pre": dict(preschedule=True, group_size=1),
    "drizzle10": dict(preschedule=True, group_size=10),
    "drizzle100": dict(preschedule=True, group_size=100),
}


@dataclass(frozen=True)
class Network:
    latency: float = 50e-6  # seconds per message
    bandwidth: float = 10e9 / 8  # bytes per second of each sender's link


NETWORKS = {"datacenter": Network(50e-6, 10e9 / 8), "loopback": Network(30e-6, 20e9 / 8)}


@dataclass(frozen=True)
class Shape:
    executors: int
    slots: int = 2
    maps_per_executor: int = 2
    map_seconds: float = 0.25e-3
    reduce_seconds: float = 0.1e-3

    @property
    def maps(self) -> int:
        return self.executors * self.maps_per_executor

    @property
    def reducers(self) -> int:
        return self.executors  # one per executor


@dataclass
class Traffic:
    messages: int = 0
    bytes: int = 0


@dataclass
class RunFigures:
    """One measured run: what the scheduler's handle() cost, what crossed the network, and when."""

    batches: int
    results: list[Any]
    scheduler_seconds: float = 0.0  # CPU time inside SchedulerState.handle
    scheduler_calls: int = 0
    scheduler_in: Traffic = field(default_factory=Traffic)
    scheduler_out: Traffic = field(default_factory=Traffic)
    executors_traffic: Traffic = field(default_factory=Traffic)  # all executors, in + out
    simulated_seconds: float = 0.0  # submit of the run to its last result
    by_message: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # scheduler handle() seconds by what it handled
    calls: Counter[str] = field(default_factory=Counter)  # scheduler handle() calls by what it handled
    wall_seconds: float = 0.0  # how long simulating it took here


@dataclass
class GroupCosts:
    """Seconds of the scheduler's CPU: placing one group, all its GroupDone reports, and one
    tick and one heartbeat at this cluster size."""

    placing: float = 0.0
    group_done: float = 0.0
    tick: float = 0.0
    heartbeat: float = 0.0


class _PlanningContext(Context):
    """The driver's own plan-building (Context.range, Dataset) with no connection: nothing here
    reaches a scheduler, the plans and code are taken as a driver would send them."""

    def __init__(self, settings: Settings) -> None:  # no Client: nothing is sent from here
        self.settings = settings
        self.address = ""
        self.code = {}
        self.broadcasts = []
        self.last_run = None


class _Driver:
    """Submits runs the way squall.client does, and assembles results the way DriverRun does."""

    def __init__(self, settings: Settings, shape: Shape) -> None:
        self.ctx = _PlanningContext(settings)
        self.shape = shape
        self.sent_code: set[str] = set()
        self.sent_nodes: set[str] = set()
        self.runs = itertools.count(1)
        self.results: list[Any] = []
        self.index: dict[str, int] = {}
        self.assembly = ResultAssembly()
        self.run_done = False
        self.last_result_at = 0.0

    def submission(self, batches: int, mode: dict[str, Any]) -> SubmitJobs:
        run_id = f"sim-{next(self.runs)}"
        datasets = [batch_dataset(self.ctx, TWO_STAGE, self.shape.maps, self.shape.reducers, NUMBERS_PER_MAP) for _ in range(batches)]
        sending: set[str] = set()
        jobs = []
        for i, dataset in enumerate(datasets):
            spec = JobSpec(job_id=f"{run_id}.{i}")
            if self.ctx.settings.plan_deltas:
                jobs.append(msgspec.structs.replace(spec, delta=dataset.delta(self.sent_nodes, sending)))
            else:
                jobs.append(msgspec.structs.replace(spec, plan=dataset.plan()))
        self.sent_nodes |= sending
        keys = set().union(*(job.code_keys() for job in jobs))
        code = {k: self.ctx.code[k] for k in keys if k not in self.sent_code}
        self.sent_code |= code.keys()
        self.results = [None] * batches
        self.index = {job.job_id: i for i, job in enumerate(jobs)}
        self.assembly = ResultAssembly()
        self.run_done = False
        return SubmitJobs(run_id=run_id, jobs=jobs, code=code, result_to=DRIVER_RESULTS if mode["preschedule"] else "", **mode)

    def receive(self, msg: Message, payloads: list[object], now: float) -> None:
        if type(msg) is RunDone:
            self.run_done = True
        elif type(msg) is JobFailed:
            raise AssertionError(f"batch {msg.batch} failed in the simulation: {msg.kind}: {msg.message}")
        elif type(msg) is JobDone:
            self._settle(self.index[msg.job_id], [r for p in payloads for r in loads_block(protocol.payload_bytes(p))], now)
        elif type(msg) is ResultPartition:
            i = self.index[msg.job]
            whole = self.assembly.take(i, msg, payloads[0], now)
            if whole is not None:
                self._settle(i, [r for b in whole.blocks for r in loads_block(protocol.payload_bytes(b))], now)

    def _settle(self, i: int, records: list[Any], now: float) -> None:
        if self.results[i] is None:  # the first whole result counts, as in DriverRun
            self.results[i] = sorted(records)
            self.last_result_at = now

    @property
    def done(self) -> bool:
        return self.run_done and all(r is not None for r in self.results)


class _Executor:
    def __init__(self, index: int, settings: Settings) -> None:
        self.id = f"x{index}"
        self.peer = self.id.encode()
        self.address = f"tcp://127.0.0.1:{20000 + index}"  # loopback, as the driver's: results go straight to it
        self.core = ExecutorState(self.id, self.address, settings, incarnation=f"inc-{index}")
        self.busy_until = 0.0
        self.active = False


class Simulation:
    """One cluster: a scheduler, a shuffle_meta, `shape.executors` executors and a driver."""

    def __init__(self, shape: Shape, network: Network = NETWORKS["datacenter"], settings: Settings | None = None) -> None:
        self.settings = (settings or Settings()).replace(executor_slots=shape.slots)
        self.shape, self.network = shape, network
        self.scheduler = SchedulerState(self.settings, incarnation="sim")
        self.meta = ShuffleMetaState()
        self.executors = [_Executor(i, self.settings) for i in range(shape.executors)]
        self.by_peer = {e.peer: e for e in self.executors}
        self.by_address = {e.address: e for e in self.executors}
        self.driver = _Driver(self.settings, shape)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._link_free: dict[str, float] = {}  # sender -> when its link has sent what is queued
        self._arrives: dict[tuple[str, str], float] = {}  # (sender, receiver) -> last arrival: in order
        self._busy = {SCHEDULER: 0.0, SHUFFLE_META: 0.0}
        self._watched: set[tuple[str, int]] = set()  # watch connections up (ExecutorConnected given)
        self._code = CodeCache({})
        self._outputs: dict[tuple[str, int, tuple[bytes, ...]], TaskOutput] = {}
        self.figures: RunFigures | None = None
        self.profiler: cProfile.Profile | None = None  # around the scheduler's handle() calls, when set
        self._sched_seconds = 0.0
        self._start()

    # --- the clock ------------------------------------------------------------------------------

    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def _run_until(self, condition: Callable[[], bool], limit: float = 3600.0) -> None:
        while not condition():
            if not self._queue:
                raise RuntimeError("the simulation ran out of events before the run finished")
            self.now, _, action = heapq.heappop(self._queue)
            if self.now > limit:
                raise RuntimeError(f"the run did not finish within {limit} simulated seconds")
            action()

    # --- the network ----------------------------------------------------------------------------

    def _send(self, sender: str, receiver: str, msg: Message, payloads: tuple[object, ...] | list[object], deliver: Callable[[Message, list[object]], None],
              frames: list[object] | None = None) -> None:
        """Deliver `msg` as the server would send it: its frames when the core encoded it already."""
        frames = frames if frames is not None else protocol.encode(msg, payloads)
        size = protocol.frames_size(frames)
        self._count(sender, receiver, size)
        leaves = max(self.now, self._link_free.get(sender, 0.0)) + size / self.network.bandwidth
        self._link_free[sender] = leaves
        arrives = max(leaves + self.network.latency, self._arrives.get((sender, receiver), 0.0))
        self._arrives[(sender, receiver)] = arrives

        def arrive() -> None:
            decoded, decoded_payloads = protocol.decode(frames, self.settings.max_message_bytes)
            deliver(decoded, decoded_payloads)

        self._at(arrives, arrive)

    def _count(self, sender: str, receiver: str, size: int) -> None:
        figures = self.figures
        if figures is None:
            return
        if sender == SCHEDULER:
            figures.scheduler_out.messages += 1
            figures.scheduler_out.bytes += size
        if receiver == SCHEDULER:
            figures.scheduler_in.messages += 1
            figures.scheduler_in.bytes += size
        for end in (sender, receiver):
            if end[0] == "x":
                figures.executors_traffic.messages += 1
                figures.executors_traffic.bytes += size

    # --- the scheduler --------------------------------------------------------------------------

    def _to_scheduler(self, sender: str, peer: bytes) -> Callable[[Message, list[object]], None]:
        return lambda msg, payloads: self._scheduler_event(lambda now: Received(msg=msg, payloads=payloads, peer=peer, now=now))

    def _scheduler_event(self, make: Callable[[float], Event]) -> None:
        """Hand the scheduler's core the event made at the time its loop gets to it; what it
        sends leaves once the handling is over (its real CPU time on this machine)."""
        start = max(self.now, self._busy[SCHEDULER])
        if start > self.now:  # the scheduler's loop is busy: the event waits its turn
            self._at(start, lambda: self._scheduler_event(make))
            return
        event = make(start)
        instructions, spent = self._timed(event)
        self._busy[SCHEDULER] = self.now + spent
        figures = self.figures
        if figures is not None:
            figures.scheduler_seconds += spent
            figures.scheduler_calls += 1
            kind = type(getattr(event, "msg", event)).__name__
            figures.by_message[kind] += spent
            figures.calls[kind] += 1
        self._sched_seconds += spent
        saved, self.now = self.now, self.now + spent  # what it sends leaves once handled
        for ins in instructions:
            if type(ins) is Send:
                executor = self.by_peer.get(ins.peer)
                if executor is not None:
                    self._send(SCHEDULER, executor.id, ins.msg, ins.payloads, self._from_scheduler(executor), ins.frames)
                else:
                    self._send(SCHEDULER, DRIVER, ins.msg, ins.payloads, self.driver_receive)
            elif type(ins) is ToShuffleMeta:
                self._send(SCHEDULER, SHUFFLE_META, ins.msg, (), self._to_meta(SCHEDULER.encode()))
            elif type(ins) is WatchExecutors:
                for executor_id, (_, joined) in ins.executors.items():
                    if (executor_id, joined) in self._watched:
                        continue  # its watch connection is up already: the server keeps it
                    self._watched.add((executor_id, joined))
                    connected = functools.partial(ExecutorConnected, executor_id=executor_id, joined=joined)
                    self._at(self.now + self.network.latency, functools.partial(self._scheduler_event, _event_at(connected)))
            elif type(ins) is Log:
                _check_log(SCHEDULER, ins)
            elif type(ins) is not ProbeDrivers:
                raise AssertionError(f"the simulation does not carry out the scheduler's {type(ins).__name__}")
        self.now = saved

    def _scheduler_tick(self) -> None:
        self._scheduler_event(lambda now: Tick(now=now, stimulus_id="tick"))
        self._at(self.now + TICK_SECONDS, self._scheduler_tick)

    def driver_receive(self, msg: Message, payloads: list[object]) -> None:
        self.driver.receive(msg, payloads, self.now)

    # --- shuffle_meta ---------------------------------------------------------------------------

    def _to_meta(self, peer: bytes) -> Callable[[Message, list[object]], None]:
        return lambda msg, payloads: self._meta_event(lambda now: Received(msg=msg, payloads=payloads, peer=peer, now=now))

    def _meta_event(self, make: Callable[[float], Event]) -> None:
        start = max(self.now, self._busy[SHUFFLE_META])
        began = cpu()
        sends = self.meta.handle(make(start))
        self._busy[SHUFFLE_META] = start + cpu() - began
        saved, self.now = self.now, self._busy[SHUFFLE_META]
        for send in sends:
            if send.peer == SCHEDULER.encode():
                self._send(SHUFFLE_META, SCHEDULER, send.msg, send.payloads, self._to_scheduler(SHUFFLE_META, b""))
            else:
                executor = self.by_peer[send.peer]
                self._send(SHUFFLE_META, executor.id, send.msg, send.payloads, self._reply_to(executor))
        self.now = saved

    # --- executors ------------------------------------------------------------------------------

    def _from_scheduler(self, executor: _Executor) -> Callable[[Message, list[object]], None]:
        return lambda msg, payloads: self._executor_event(executor, lambda now: FromScheduler(msg=msg, payloads=payloads, now=now))

    def _reply_to(self, executor: _Executor) -> Callable[[Message, list[object]], None]:
        """A message on one of the connections the executor opened (a peer's answer, shuffle_meta's)."""
        return lambda msg, payloads: self._executor_event(executor, lambda now: Received(msg=msg, payloads=payloads, now=now))

    def _on_block_socket(self, executor: _Executor, sender: bytes | None) -> Callable[[Message, list[object]], None]:
        return lambda msg, payloads: self._executor_event(executor, lambda now: Received(msg=msg, payloads=payloads, peer=sender, now=now))

    def _executor_event(self, executor: _Executor, event: Callable[[float], Event]) -> None:
        """Hand the executor's core the event made at the time its loop gets to it."""
        start = max(self.now, executor.busy_until)
        began = cpu()
        instructions = executor.core.handle(event(start))
        clock = start + cpu() - began
        saved = self.now
        runs: list[RunTask] = []
        for ins in instructions:
            self.now = clock
            kind = type(ins)
            if kind is RunTask:
                runs.append(ins)  # after this step's messages, as the server does
            elif kind is ToScheduler:
                self._send(executor.id, SCHEDULER, ins.msg, ins.payloads, self._to_scheduler(executor.id, executor.peer))
            elif kind is ToShuffleMeta:
                self._send(executor.id, SHUFFLE_META, ins.msg, (), self._to_meta(executor.peer))
            elif kind is ToPeer:
                peer = self.by_address.get(ins.address)
                if peer is not None:
                    self._send(executor.id, peer.id, ins.msg, ins.payloads, self._on_block_socket(peer, executor.peer))
                elif ins.address == DRIVER_RESULTS:
                    self._send(executor.id, DRIVER, ins.msg, ins.payloads, self.driver_receive)
                else:
                    raise AssertionError(f"executor {executor.id} sends to an unknown address {ins.address}")
            elif kind is Send:
                asker = self.by_peer[ins.peer]
                self._send(executor.id, asker.id, ins.msg, ins.payloads, self._reply_to(asker))
            elif kind is Activate:
                if not executor.active:
                    executor.active = True
                    self._at(clock + self.settings.heartbeat_interval * (int(executor.id[1:]) % 97) / 97, lambda: self._beat(executor))
            elif kind is WakeAt:
                self._at(max(clock, ins.when), lambda: self._executor_event(executor, lambda now: HeldDue(now=now)))
            elif kind is Log:
                _check_log(executor.id, ins)
            elif kind is not Connect:
                raise AssertionError(f"the simulation does not carry out the executor's {kind.__name__}")
        for run in runs:  # short latency tasks run on the executor's loop: it is busy meanwhile
            outcome = self._task_output(run)
            clock += self.shape.map_seconds if run.task.stage_id == 0 else self.shape.reduce_seconds
            completed = functools.partial(TaskCompleted, task=run.task, outcome=outcome)
            self._at(clock, functools.partial(self._executor_event, executor, _event_at(completed)))
        executor.busy_until = clock
        self.now = saved

    def _task_output(self, run: RunTask) -> TaskOutput | Failure:
        inputs = tuple(bytes(protocol.payload_bytes(frame)) for frame in run.inputs)
        key = (run.spec.pipeline_key() + repr(run.spec.input), run.task.partition, inputs)
        output = self._outputs.get(key)
        if output is None:
            self._code._blobs = run.code
            output = self._outputs[key] = run_task(run.spec, run.task.partition, list(inputs), self._code)
        return output

    def _beat(self, executor: _Executor) -> None:
        latency, batch, suspended = executor.core.load()
        beat = Heartbeat(executor_id=executor.id, incarnation=executor.core.registration.msg.incarnation,
                         latency_tasks=latency, batch_tasks=batch, suspended_tasks=suspended)
        self._send(executor.id, SCHEDULER, beat, (), self._to_scheduler(executor.id, executor.peer + b"-beat"))
        self._at(self.now + self.settings.heartbeat_interval, lambda: self._beat(executor))

    def _executor_tick(self, executor: _Executor) -> None:
        self._executor_event(executor, lambda now: Tick(now=now, stimulus_id="tick"))
        self._at(self.now + EXECUTOR_TICK, lambda: self._executor_tick(executor))

    # --- start-up and runs ----------------------------------------------------------------------

    def _start(self) -> None:
        for executor in self.executors:  # started a moment apart, as a cluster's executors come up
            self._at(START_APART * int(executor.id[1:]), functools.partial(self._executor_event, executor, lambda now: Started(now=now)))
            self._at(EXECUTOR_TICK * (int(executor.id[1:]) % 50) / 50, functools.partial(self._executor_tick, executor))
        self._at(TICK_SECONDS, self._scheduler_tick)
        self._run_until(lambda: len(self.scheduler.members.executors) == len(self.executors) and all(e.active for e in self.executors))

    def run(self, mode: str | dict[str, Any], batches: int, measure: bool = True) -> RunFigures:
        """Submit `batches` micro-batches in `mode` (a name of MODES, or SubmitJobs' preschedule
        and group_size) and run until the driver has every result and the run's end; figures
        cover the submission to the last result. Each result: the batch's records, sorted."""
        submit = self.driver.submission(batches, MODES[mode] if isinstance(mode, str) else mode)
        figures = RunFigures(batches=batches, results=[])
        self.figures = figures if measure else None
        started_wall = time.perf_counter()
        gc.collect()
        gc.disable()  # a collection would land in whichever handle() call it interrupts
        try:
            began = self.now
            self._send(DRIVER, SCHEDULER, submit, (), self._to_scheduler(DRIVER, DRIVER.encode()))
            self._run_until(lambda: self.driver.done)
        finally:
            gc.enable()
        self.figures = None
        figures.simulated_seconds = self.driver.last_result_at - began
        figures.results = list(self.driver.results)
        figures.wall_seconds = time.perf_counter() - started_wall
        return figures

    def group_costs(self, batches: int) -> GroupCosts:
        """The scheduler's CPU for one Drizzle group of `batches` micro-batches, its data plane
        not simulated (at a thousand executors one micro-batch is two million pushes): placing it
        (the SubmitJobs that plans the batches and sends each executor its LaunchGroup), then
        each executor's GroupDone, standing in for the executors' own: the result partitions its
        launch had it send to the driver. Then ticks and heartbeats, per call. The simulation is
        of no further use after this."""
        submit = self.driver.submission(batches, dict(preschedule=True, group_size=batches))
        msg, _ = protocol.decode(protocol.encode(submit), self.settings.max_message_bytes)
        costs = GroupCosts()
        gc.collect()
        gc.disable()
        try:
            launched, costs.placing = self._timed(Received(msg=msg, peer=DRIVER.encode(), now=self.now))
            reports = []
            for ins in launched:
                if type(ins) is Send and type(ins.msg) is LaunchGroup:
                    results: dict[str, list[int]] = {}
                    for task in ins.msg.tasks:
                        if task.result_to:
                            results.setdefault(task.job_id, []).append(task.partition)
                    executor = self.by_peer[ins.peer]
                    reports.append((executor, GroupDone(group_id=ins.msg.group_id, executor_id=executor.id, tasks=len(ins.msg.tasks),
                                                       busy=0.0, results=results)))
            for executor, report in reports:
                costs.group_done += self._timed(Received(msg=report, peer=executor.peer, now=self.now))[1]
            if self.scheduler.runs:
                raise AssertionError("the group's reports did not end its run")
            ticks = 50
            for i in range(ticks):
                costs.tick += self._timed(Tick(now=self.now + i * TICK_SECONDS))[1] / ticks
            for executor in self.executors:
                beat = Heartbeat(executor_id=executor.id, incarnation=executor.core.registration.msg.incarnation)
                costs.heartbeat += self._timed(Received(msg=beat, peer=executor.peer + b"-beat", now=self.now))[1] / len(self.executors)
        finally:
            gc.enable()
        return costs

    def _timed(self, event: Event) -> tuple[list[Any], float]:
        profiler = self.profiler
        if profiler is not None:
            profiler.enable()
        began = cpu()
        instructions = self.scheduler.handle(event)
        spent = cpu() - began
        if profiler is not None:
            profiler.disable()
        return instructions, spent

    def expected(self) -> list[tuple[int, int]]:
        """Every micro-batch's result, computed in plain Python: (key, sum) pairs in key order."""
        sums = expected_result(TWO_STAGE, self.shape.maps, self.shape.reducers, NUMBERS_PER_MAP)
        assert isinstance(sums, list)
        return list(enumerate(sums))


def _event_at(factory: Callable[..., Event]) -> Callable[[float], Event]:
    """An event of `factory` made at the time its service gets to it."""
    return lambda now: factory(now=now)


def _check_log(where: str, log: Log) -> None:
    if log.level in ("warning", "error"):
        raise AssertionError(f"{where} logged {log.level} {log.event}: {log.fields}")


__all__ = ["GroupCosts", "MODES", "NETWORKS", "Network", "RunFigures", "Shape", "Simulation"]
