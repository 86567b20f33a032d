"""The executor loop: a DEALER to the scheduler, a ROUTER serving blocks, DEALERs to shuffle_meta
and to peers, and the runner's two lane threads (latency, batch). It only moves bytes and time: what arrives becomes an event
for ExecutorState.handle, and the instructions it returns are carried out in order. The sockets'
own upkeep (closing idle peer connections, noticing shuffle_meta reconnect) stays here."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq
from squall.common import broadcast_store, dataset_checkpoints, metrics_endpoint, security, transport
from squall.common.core import Event, Log, Received, Send, Tick, ToShuffleMeta, stimulus
from squall.common.protocol import GetTracked, LaunchGroup, Message, TaskDescriptor
from squall.common.settings import Settings
from squall.services.executor import events
from squall.services.executor.checkpoints import Checkpointer
from squall.services.executor.departure import ANSWER_TIMEOUT
from squall.services.executor.heartbeat import Heartbeater
from squall.services.executor.instructions import (
    Activate,
    CheckpointMapOutput,
    CheckpointState,
    Connect,
    DiscardWork,
    DropStates,
    Exit,
    ForgetCheckpoints,
    LoadStates,
    PreemptTask,
    PruneMapCheckpoints,
    Reconnect,
    RestoreState,
    ResumeTask,
    RunTask,
    StopTask,
    SuspendTask,
    ToPeer,
    ToScheduler,
    WakeAt,
)
from squall.services.executor.metrics import ExecutorCollector
from squall.services.executor.preemption import suspension_figures
from squall.services.executor.reports import Failure
from squall.services.executor.runner import Runner
from squall.services.executor.state import BLOCK_SOCKET_MESSAGES, PEER_MESSAGES, SCHEDULER_MESSAGES, ExecutorState
from squall.services.executor.task_states import TaskKey
from squall.services.executor.tasks import TaskOutput
from zmq.utils.monitor import recv_monitor_message

# How long carrying out SuspendTask waits for the batch task to park, so that the latency task
# that follows runs alone. A record whose C call takes longer is not waited for.
SUSPEND_WAIT = 0.005


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ExecutorServer:
    def __init__(self, settings: Settings, log: Any, executor_id: str | None = None, ready_file: str | None = None) -> None:
        self.settings = settings
        self.executor_id = executor_id or default_executor_id()
        self.log = log.bind(executor=self.executor_id)
        security.check(settings, [settings.executor_bind, settings.scheduler_address])
        self.ctx = zmq.Context()
        self.auth = security.start_authenticator(self.ctx, settings)  # before anything can connect
        self.data = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        bound = transport.bind(self.data, settings.executor_bind)
        self.data_address = transport.advertised(bound, settings.executor_advertise_host)
        self.sched = transport.new_socket(self.ctx, zmq.DEALER, settings)
        self.sched.connect(settings.scheduler_address)
        self.meta: zmq.Socket[Any] | None = None
        self.meta_events: zmq.Socket[Any] | None = None
        self.meta_connects = 0
        self.peers: dict[str, zmq.Socket[Any]] = {}
        self._peer_used: dict[str, float] = {}  # address -> when we last sent to it (monotonic)
        self.incarnation = uuid.uuid4().hex
        # Metrics first: the registration the core sends carries their URL (None: no endpoint).
        self.metrics = metrics_endpoint.start(settings, self.log, "executor", advertise_host=settings.executor_advertise_host)
        self.state = ExecutorState(self.executor_id, self.data_address, settings, incarnation=self.incarnation, pid=os.getpid(),
                                   wall_offset=time.time() - time.monotonic(),
                                   metrics_address=self.metrics.url if self.metrics is not None else "")
        self.generation = 0  # bumped by DiscardWork, so results of tasks written off are ignored
        self.checkpoints = Checkpointer(settings.checkpoint_root, self.log)
        self.runner = Runner(self.log, self.checkpoints, settings.batch_nice, settings.batch_lane, settings.batch_sched_idle)
        broadcast_store.install(self.runner.task_code)  # broadcast values arrive with the code
        dataset_checkpoints.install(self.checkpoints.store)  # where tasks write and read Dataset.checkpoint()'s partitions
        if self.metrics is not None:
            self.metrics.registry.register(ExecutorCollector(self.state, self.checkpoints))
        self.heartbeat = Heartbeater(self.ctx, settings, self.executor_id, self.incarnation, self.log)
        self.loop = transport.ServiceLoop(settings, self.log)
        self.loop.add_reader(self.data, self._on_data)
        self.loop.add_reader(self.sched, self._on_scheduler)
        self.loop.add_reader(self.runner.wakeup.fd, self._on_runner)
        self.loop.add_reader(self.heartbeat.wakeup.fd, self._on_heartbeat_signal)
        self.loop.add_reader(self.checkpoints.wakeup.fd, self._on_checkpointed)
        self.loop.every(0.05, lambda: self.handle(Tick(now=time.monotonic(), stimulus_id="tick")))
        self.loop.every(max(0.5, settings.shuffle_fetch_timeout / 2), self._close_idle_peers)
        self.loop.every(min(0.05, settings.heartbeat_interval), self._loop_alive)
        self.loop.every(max(0.25, settings.heartbeat_interval), self._observed)
        self.from_scheduler = self._scheduler_handlers(self.sched)
        self.from_peers: transport.DealerHandlers = {t: self._received_from_peer for t in PEER_MESSAGES}
        self.on_block_socket: transport.RouterHandlers = {t: self._received_on_block_socket for t in BLOCK_SOCKET_MESSAGES}
        self._carry_out: dict[type, Callable[[Any], None]] = {
            ToScheduler: lambda i: transport.send(self.sched, i.msg, i.payloads),
            ToShuffleMeta: self._to_shuffle_meta,
            ToPeer: self._to_peer,
            Connect: self._connect_peers,
            Send: lambda i: transport.send(self.data, i.msg, i.payloads, to=i.peer),
            Log: lambda i: getattr(self.log, i.level)(i.event, **i.fields),
            StopTask: self._stop_task,
            SuspendTask: self._suspend_task,
            ResumeTask: self._resume_task,
            PreemptTask: self._preempt_task,
            CheckpointMapOutput: lambda i: self.checkpoints.write_map_output(i.key, i.blocks),
            CheckpointState: self._checkpoint_state,
            PruneMapCheckpoints: lambda i: self.checkpoints.prune_maps(i.state_id, i.before),
            ForgetCheckpoints: lambda i: self.checkpoints.forget(i.state_ids),
            LoadStates: self._load_states,
            RestoreState: lambda i: self.runner.restore_state((i.state_id, i.partition), i.table),
            DropStates: lambda i: self.runner.drop_states(i.state_ids, i.partition),
            WakeAt: lambda i: self.loop.call_at(i.when, self._held_due),
            Activate: self._activate,
            Reconnect: self._reconnect,
            DiscardWork: self._discard_work,
            Exit: self._exit,
        }
        self.loop.on_terminate(self._terminated)  # SIGTERM: leave gracefully (departure.py)
        if ready_file:
            metrics_endpoint.write_url_file(ready_file, self.metrics)
            transport.write_ready_file(ready_file, self.data_address)
        self.log.info("started", data_address=self.data_address, scheduler=settings.scheduler_address)

    def tracked(self) -> dict[str, int]:
        """The tables the server holds beside the core's."""
        return {
            **{f"runner.{k}": v for k, v in self.runner.tracked().items()},
            **{f"checkpoints.{k}": v for k, v in self.checkpoints.tracked().items()},
            "peers": len(self.peers),
        }

    def run(self) -> int:
        """Serve until stopped; the exit code (0 unless it gave up waiting to leave gracefully)."""
        sys.setswitchinterval(self.settings.executor_switch_interval)
        self.handle(events.Started(now=time.monotonic(), stimulus_id="started"))  # registers with the scheduler
        try:
            self.loop.run()
        finally:
            self.runner.close()
            self.heartbeat.close()
            self.checkpoints.close()
            if self.meta is not None and self.meta_events is not None:
                self.meta.disable_monitor()
                self.meta_events.close(0)
            for sock in [self.data, self.sched, self.meta, *self.peers.values()]:
                if sock is not None:
                    sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            if self.metrics is not None:
                self.metrics.close()
            self.ctx.term()
        return self.loop.exit_code

    # --- events in ------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Hand an event to the core and carry out what it returns: messages first, then the task
        it hands to the runner (so this step's messages are on their way before user code runs)."""
        runs: list[RunTask] = []
        for instruction in self.state.handle(event):
            if type(instruction) is RunTask:
                runs.append(instruction)
            else:
                self._carry_out[type(instruction)](instruction)
        for run in runs:
            self._run(run)

    def _scheduler_handlers(self, sock: zmq.Socket[Any]) -> transport.DealerHandlers:
        def received(msg: Message, payloads: list[object]) -> None:
            if sock is self.sched:  # what was queued behind a Reregister on a replaced connection is written off
                now, stimulus_id = time.monotonic(), stimulus(type(msg).__name__)
                self.handle(events.FromScheduler(now=now, stimulus_id=stimulus_id, msg=msg, payloads=payloads))

        return {t: received for t in SCHEDULER_MESSAGES}

    def _received_from_peer(self, msg: Message, payloads: list[object]) -> None:
        self.handle(Received(now=time.monotonic(), stimulus_id=stimulus(type(msg).__name__), msg=msg, payloads=payloads))

    def _received_on_block_socket(self, peer: bytes, msg: Message, payloads: list[object]) -> None:
        now, stimulus_id = time.monotonic(), stimulus(type(msg).__name__)
        if isinstance(msg, GetTracked):
            self.handle(events.TrackedAsked(now=now, stimulus_id=stimulus_id, msg=msg, peer=peer, server_sizes=self.tracked(),
                                            server_counters=suspension_figures(self.runner.suspension_seconds())))
        else:
            self.handle(Received(now=now, stimulus_id=stimulus_id, msg=msg, payloads=payloads, peer=peer))

    def _on_scheduler(self, sock: zmq.Socket[Any]) -> None:
        transport.drain_dealer(sock, self.settings, self.log, self.from_scheduler, "scheduler")

    def _on_peer(self, sock: zmq.Socket[Any]) -> None:
        transport.drain_dealer(sock, self.settings, self.log, self.from_peers, "peer")

    def _on_data(self, sock: zmq.Socket[Any]) -> None:
        transport.drain_router(sock, self.settings, self.log, self.on_block_socket, "an executor's block socket")

    def _terminated(self) -> None:
        """SIGTERM (each one): the core asks to leave, or exits; the first starts the grace period."""
        if not self.state.departure.leaving:
            self.loop.call_later(ANSWER_TIMEOUT, lambda: self.handle(events.AnswerOverdue(now=time.monotonic(), stimulus_id=stimulus("unanswered"))))
            self.loop.call_later(self.settings.decommission_timeout,
                                 lambda: self.handle(events.GraceOver(now=time.monotonic(), stimulus_id=stimulus("grace-over"))))
        self.handle(events.Terminated(now=time.monotonic(), stimulus_id=stimulus("sigterm")))

    def _exit(self, instruction: Exit) -> None:
        """Leave: the checkpoints being written land first (Checkpointer.close, on the way out)."""
        self.heartbeat.active.clear()
        self.loop.exit(instruction.code)

    def _on_heartbeat_signal(self, fd: int) -> None:
        self.heartbeat.wakeup.drain()
        if self.heartbeat.reregister.is_set():
            self.heartbeat.reregister.clear()
            self.handle(events.SchedulerForgotUs(now=time.monotonic(), stimulus_id=stimulus("reregister")))

    def _on_meta_connected(self, monitor: zmq.Socket[Any]) -> None:
        while monitor.poll(0):
            recv_monitor_message(monitor)
            self.meta_connects += 1
            if self.meta_connects > 1:  # connected again: shuffle_meta restarted, and knows nothing
                self.handle(events.ShuffleMetaRestarted(now=time.monotonic(), stimulus_id=stimulus("shuffle-meta-restarted")))

    def _on_checkpointed(self, fd: int) -> None:
        written = self.checkpoints.written()
        if written:
            self.handle(events.CheckpointsWritten(now=time.monotonic(), stimulus_id=stimulus("checkpointed"), written=written))

    def _on_runner(self, fd: int) -> None:
        self.runner.wakeup.drain()
        sliced = self.runner.batch.sliced
        while sliced:
            generation, key = sliced.popleft()
            if generation == self.generation:
                self.handle(events.SliceOver(now=time.monotonic(), stimulus_id=stimulus("slice-over"), key=key))
        while self.runner.done:
            generation, task, outcome = self.runner.done.popleft()
            if generation == self.generation:
                self._task_completed(task, outcome)

    def _loop_alive(self) -> None:
        """The heartbeat thread reads what the loop last saw: that it went round, and its load."""
        self.heartbeat.loop_alive()
        self.heartbeat.load = self.state.load()

    def _observed(self) -> None:
        """What the heartbeats tell the dashboard, refreshed less often than the loads."""
        self.heartbeat.persisted, self.heartbeat.batch_done = self.state.observed()

    # --- instructions out -----------------------------------------------------------------------

    def _to_shuffle_meta(self, instruction: ToShuffleMeta) -> None:
        if self.meta is None:
            self.log.error("no_shuffle_meta", message=type(instruction.msg).__name__)
        else:
            transport.send(self.meta, instruction.msg)

    def _to_peer(self, instruction: ToPeer) -> None:
        if not transport.try_send(self._peer(instruction.address), instruction.msg, instruction.payloads):
            # The peer's queue is full or it never connected: it is likely dead, and the
            # scheduler will fail the jobs that needed it. Never stall the loop on it.
            self.log.warning("peer_unreachable", address=instruction.address, message=type(instruction.msg).__name__)

    def _stop_task(self, instruction: StopTask) -> None:
        key = instruction.key
        stopping = self.runner.stop(key, time.monotonic())
        self.log.info("stopping_task", job=key[0], stage=key[1], partition=key[2], on_runner=stopping)

    def _suspend_task(self, instruction: SuspendTask) -> None:
        """Ask the batch task to park, and wait (GIL released) until it has, briefly: the latency
        task carried out next then runs alone."""
        signal = self.runner.batch_signal(instruction.key)
        if signal is None:
            return
        asked = time.monotonic()
        signal.suspend(asked)
        key = instruction.key
        if signal.parked.wait(SUSPEND_WAIT):
            self.log.debug("task_suspended", job=key[0], stage=key[1], partition=key[2],
                           latency_ms=round((time.monotonic() - asked) * 1000, 3))
        else:  # a long record (one C call, or user code between two safe points): it parks when it returns
            self.log.debug("task_suspension_slow", job=key[0], stage=key[1], partition=key[2], waited_ms=SUSPEND_WAIT * 1000)

    def _resume_task(self, instruction: ResumeTask) -> None:
        signal = self.runner.batch_signal(instruction.key)
        if signal is not None:
            suspended = time.monotonic() - signal.requested_at
            signal.resume(time.monotonic(), instruction.slice)
            key = instruction.key
            if instruction.slice:  # the slice ends on the loop's clock too, whenever the OS runs the task
                generation = self.generation
                self.loop.call_later(instruction.slice, lambda: self._slice_time_up(key, generation))
            self.log.debug("task_resumed", job=key[0], stage=key[1], partition=key[2], slice=instruction.slice,
                           suspended_ms=round(suspended * 1000, 3))

    def _slice_time_up(self, key: TaskKey, generation: int) -> None:
        if generation == self.generation:
            self.handle(events.SliceOver(now=time.monotonic(), stimulus_id=stimulus("slice-time-up"), key=key))

    def _preempt_task(self, instruction: PreemptTask) -> None:
        signal = self.runner.batch_signal(instruction.key)
        if signal is not None:
            signal.kill(time.monotonic())

    def _checkpoint_state(self, instruction: CheckpointState) -> None:
        table = self.runner.states.get((instruction.state_id, instruction.partition))
        if table is not None:
            self.checkpoints.write_state(instruction.state_id, instruction.partition, instruction.batch, table)

    def _load_states(self, instruction: LoadStates) -> None:
        """Load the checkpoints of the partitions this executor takes over (recovery only), and
        give the launch back to the core with them."""
        msg: LaunchGroup = instruction.launch
        restored: events.Restored = {}
        for r in msg.restores:
            key = (r.state_id, r.partition)
            try:
                loaded = self.checkpoints.load_state(r.state_id, r.partition, r.up_to)
            except (OSError, ValueError) as exc:
                restored[key] = f"the checkpoint of partition {r.partition} of keyed state {r.state_id} is unreadable: {exc}"
                continue
            if loaded is not None:
                restored[key] = loaded
        answer = events.StatesLoaded(now=time.monotonic(), stimulus_id=stimulus("states-loaded"), launch=msg, restored=restored)
        self.handle(answer)

    def _activate(self, instruction: Activate) -> None:
        self.heartbeat.active.set()
        if self.meta is None:
            self.meta = transport.new_socket(self.ctx, zmq.DEALER, self.settings)
            self.meta_events = self.meta.get_monitor_socket(zmq.EVENT_CONNECTED)
            self.meta.connect(instruction.shuffle_meta_address)
            self.loop.add_reader(self.meta, self._on_peer)
            self.loop.add_reader(self.meta_events, self._on_meta_connected)

    def _reconnect(self, instruction: Reconnect) -> None:
        self.heartbeat.active.clear()
        self.heartbeat.registration += 1
        old = self.sched
        self.loop.remove_reader(old)
        self.loop.call_later(0, lambda: old.close(0))  # not now: a Reregister on it is read while draining it
        self.sched = transport.new_socket(self.ctx, zmq.DEALER, self.settings)
        self.sched.connect(self.settings.scheduler_address)
        self.from_scheduler = self._scheduler_handlers(self.sched)
        self.loop.add_reader(self.sched, self._on_scheduler)

    def _discard_work(self, instruction: DiscardWork) -> None:
        self.generation += 1
        self.runner.abandon(time.monotonic())  # their results would be ignored; a suspended one must not stay parked
        self.runner.states.clear()

    # --- peers ----------------------------------------------------------------------------------

    def _peer(self, address: str) -> zmq.Socket[Any]:
        sock = self.peers.get(address)
        if sock is None:
            sock = transport.new_socket(self.ctx, zmq.DEALER, self.settings)
            sock.connect(address)
            self.loop.add_reader(sock, self._on_peer)
            self.peers[address] = sock
        self._peer_used[address] = time.monotonic()
        return sock

    def _connect_peers(self, instruction: Connect) -> None:
        """Connect ahead of need to peers not connected yet; an address ZeroMQ refuses is logged,
        and the group goes on (its pushes there will find the peer unreachable, as for a dead one).
        A connection already open is left as it is: only sending marks it used, so one left idle
        through a network partition is still closed and made afresh (_close_idle_peers)."""
        for address in instruction.addresses:
            if address in self.peers:
                continue  # as it is: only sending marks a connection used (an idle one is replaced in time)
            try:
                self._peer(address)
            except zmq.ZMQError as exc:
                self.log.warning("peer_address_refused", address=address, error=str(exc))

    def _close_idle_peers(self) -> None:
        """Close connections to peers we have not sent to for twice the fetch timeout: a fetch
        answered by then has been answered or given up on, and an executor that died, or left
        with its address, would otherwise keep a socket here for as long as this one runs. A peer
        needed again is connected again."""
        idle_since = time.monotonic() - 2 * self.settings.shuffle_fetch_timeout
        for address in [a for a, used in self._peer_used.items() if used < idle_since]:
            sock = self.peers.pop(address)
            del self._peer_used[address]
            self.loop.remove_reader(sock)
            sock.close(0)

    # --- the runner -----------------------------------------------------------------------------

    def _run(self, run: RunTask) -> None:
        """Short latency stages run on the loop thread (no thread hand-off), each as a timer due
        now, so the loop polls its sockets between two tasks; others run on the runner thread, and
        batch tasks always on the batch thread (they can be suspended only there)."""
        if run.task.priority != "batch" and self.runner.expected_seconds(run.task.stage_key, run.spec) < self.settings.inline_task_max:
            generation = self.generation
            self.loop.call_later(0, lambda: self._run_inline(run, generation))
        else:
            self.runner.submit(self.generation, run)

    def _run_inline(self, run: RunTask, generation: int) -> None:
        outcome = self.runner.run_inline(run)
        if generation == self.generation:
            self._task_completed(run.task, outcome)

    def _task_completed(self, task: TaskDescriptor, outcome: TaskOutput | Failure) -> None:
        self.handle(events.TaskCompleted(now=time.monotonic(), stimulus_id=stimulus("task-done"), task=task, outcome=outcome))

    def _held_due(self) -> None:
        self.handle(events.HeldDue(now=time.monotonic(), stimulus_id=stimulus("held-due")))
