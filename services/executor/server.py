"""The executor loop: a DEALER to the scheduler, a ROUTER serving blocks, DEALERs to shuffle_meta
and to peers, and the runner thread. All decisions are made by ExecutorState."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from typing import Any

import zmq
from squall.common import broadcast_store, security, transport
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    CancelJobs,
    ErrorReply,
    FetchBlocks,
    ForgetStates,
    GetTracked,
    LaunchGroup,
    LaunchTasks,
    MapOutputs,
    Ping,
    Pong,
    PruneCheckpoints,
    PushBlocks,
    Registered,
    RegisterExecutor,
    ReleaseJob,
    Reregister,
    StateCheckpointed,
)
from squall.common.settings import Settings
from squall.common.tracked import tracked_reply
from squall.services.executor.checkpoints import Checkpointer
from squall.services.executor.heartbeat import Heartbeater
from squall.services.executor.runner import Runner
from squall.services.executor.state import (
    Action,
    CheckpointMapOutput,
    CheckpointState,
    ExecutorState,
    Reply,
    Restored,
    Run,
    StopTask,
    ToPeer,
    ToScheduler,
    ToShuffleMeta,
)
from zmq.utils.monitor import recv_monitor_message

REGISTER_RETRY = 1.0


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
        self.meta: zmq.Socket | None = None
        self.peers: dict[str, zmq.Socket] = {}
        self._peer_used: dict[str, float] = {}  # address -> when we last sent to it (monotonic)
        self.state = ExecutorState(self.executor_id, self.data_address, settings)
        self.state.wall_offset = time.time() - time.monotonic()
        self._release_at: float | None = None  # when the loop will next release held source tasks
        self.registered = False
        self.generation = 0  # bumped on reset, so stale runner results are ignored
        self.checkpoints = Checkpointer(settings.checkpoint_root, self.log)
        self.runner = Runner(self.state.code, self.state.states, self.log, self.checkpoints)
        broadcast_store.install(self.state.code)  # broadcast values arrive with the code
        self.incarnation = uuid.uuid4().hex
        self.heartbeat = Heartbeater(self.ctx, settings, self.executor_id, self.incarnation, self.log)
        self.loop = transport.ServiceLoop(settings, self.log)
        self.loop.add_reader(self.data, self._on_data)
        self.loop.add_reader(self.sched, self._on_scheduler)
        self.loop.add_reader(self.runner.wakeup.fd, self._on_runner)
        self.loop.add_reader(self.heartbeat.wakeup.fd, self._on_heartbeat_signal)
        self.loop.add_reader(self.checkpoints.wakeup.fd, self._on_checkpointed)
        self.loop.every(0.05, lambda: self._perform(self.state.tick(time.monotonic())))
        self.loop.every(max(0.5, settings.shuffle_fetch_timeout / 2), self._close_idle_peers)
        self.loop.every(min(0.05, settings.heartbeat_interval), self.heartbeat.loop_alive)
        now = time.monotonic
        self.from_scheduler: transport.DealerHandlers = {
            Registered: self._on_registered,
            Reregister: self._on_reregister,
            LaunchTasks: lambda m, p: self.state.launch(m, now()),
            LaunchGroup: lambda m, p: self.state.launch_group(m, now(), self._load_restores(m)),
            ReleaseJob: lambda m, p: self.state.release_jobs(m.job_ids, now(), m.superseded),
            CancelJobs: lambda m, p: self.state.cancel_jobs(m.job_ids, now()),
            PruneCheckpoints: lambda m, p: self.checkpoints.prune_maps(m.state_id, m.before),
            ForgetStates: self._forget_states,
            ErrorReply: lambda m, p: self.log.warning("scheduler_error", reason=m.reason),
            Pong: lambda m, p: None,
        }
        self.from_peers: transport.DealerHandlers = {  # other executors and shuffle_meta
            Blocks: lambda m, p: self.state.blocks(m, p, now()),
            MapOutputs: lambda m, p: self.state.map_outputs(m, now()),
            ErrorReply: lambda m, p: self.state.request_failed(m),
        }
        self.on_block_socket: transport.RouterHandlers = {
            FetchBlocks: lambda peer, m, p: self.state.serve_fetch(peer, m),
            PushBlocks: lambda peer, m, p: self.state.pushed(m, p, now()),
            BlocksReady: lambda peer, m, p: self.state.blocks_ready(m, now()),
            Ping: lambda peer, m, p: [Reply(peer, Pong(nonce=m.nonce, service="executor"))],
            GetTracked: lambda peer, m, p: [Reply(peer, tracked_reply("executor", self.tracked(), m.heap))],
        }
        self._register()
        if ready_file:
            transport.write_ready_file(ready_file, self.data_address)
        self.log.info("started", data_address=self.data_address, scheduler=settings.scheduler_address)

    def tracked(self) -> dict[str, int]:
        return {
            **self.state.tracked(),
            **{f"runner.{k}": v for k, v in self.runner.tracked().items()},
            **{f"checkpoints.{k}": v for k, v in self.checkpoints.tracked().items()},
            "peers": len(self.peers),
        }

    def run(self) -> None:
        sys.setswitchinterval(self.settings.executor_switch_interval)
        try:
            self.loop.run()
        finally:
            self.runner.close()
            self.heartbeat.close()
            self.checkpoints.close()
            if self.meta is not None:
                self.meta.disable_monitor()
                self.meta_events.close(0)
            for sock in [self.data, self.sched, self.meta, *self.peers.values()]:
                if sock is not None:
                    sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            self.ctx.term()

    # --- scheduler ------------------------------------------------------------------------------

    def _register(self) -> None:
        if self.registered:
            return
        msg = RegisterExecutor(
            executor_id=self.executor_id,
            incarnation=self.incarnation,
            data_address=self.data_address,
            slots=self.settings.executor_slots,
            pid=os.getpid(),
        )
        transport.send(self.sched, msg)
        self.loop.call_later(REGISTER_RETRY, self._register)

    def _on_heartbeat_signal(self, fd: int) -> None:
        self.heartbeat.wakeup.drain()
        if self.heartbeat.reregister.is_set():
            self.heartbeat.reregister.clear()
            self._on_reregister(None, [])

    def _on_scheduler(self, sock: zmq.Socket) -> None:
        transport.drain_dealer(sock, self.settings, self.log, self.from_scheduler, "scheduler", self._perform)

    def _on_registered(self, msg: Registered, payloads: list[object]) -> None:
        self.registered = True
        self.heartbeat.active.set()
        if self.meta is None:
            self.meta = transport.new_socket(self.ctx, zmq.DEALER, self.settings)
            self.meta_events = self.meta.get_monitor_socket(zmq.EVENT_CONNECTED)
            self.meta_connects = 0
            self.meta.connect(msg.shuffle_meta_address)
            self.loop.add_reader(self.meta, self._on_peer)
            self.loop.add_reader(self.meta_events, self._on_meta_connected)
        self.log.info("registered", shuffle_meta=msg.shuffle_meta_address)

    def _on_reregister(self, msg: Reregister | None, payloads: list[object]) -> None:
        if not self.registered:
            return  # already registering again
        self.log.warning("scheduler_forgot_us")
        self.heartbeat.active.clear()
        self.heartbeat.registration += 1
        # A fresh connection: what was queued on the old one (launches and reports of the written-
        # off work, possibly stuck behind a healed partition's retransmissions) is dropped.
        self.loop.remove_reader(self.sched)
        self.sched.close(0)
        self.sched = transport.new_socket(self.ctx, zmq.DEALER, self.settings)
        self.sched.connect(self.settings.scheduler_address)
        self.loop.add_reader(self.sched, self._on_scheduler)
        self.state.reset()
        self.generation += 1
        self.registered = False
        self._register()

    def _on_meta_connected(self, monitor: zmq.Socket) -> None:
        while monitor.poll(0):
            recv_monitor_message(monitor)
            self.meta_connects += 1
            if self.meta_connects > 1:  # connected again: shuffle_meta restarted, and knows nothing
                self.log.warning("shuffle_meta_reconnected")
                self._perform(self.state.shuffle_meta_restarted())

    # --- checkpoints ----------------------------------------------------------------------------

    def _load_restores(self, msg: LaunchGroup) -> Restored:
        """Load the checkpoints of the partitions this executor takes over (recovery only)."""
        restored: Restored = {}
        for r in msg.restores:
            key = (r.state_id, r.partition)
            try:
                loaded = self.checkpoints.load_state(r.state_id, r.partition, r.up_to)
            except (OSError, ValueError) as exc:
                restored[key] = f"the checkpoint of partition {r.partition} of keyed state {r.state_id} is unreadable: {exc}"
                continue
            if loaded is not None:
                restored[key] = loaded
            self.log.info("state_restored", state=r.state_id, partition=r.partition, batch=loaded[0] if loaded else None)
        return restored

    def _on_checkpointed(self, fd: int) -> None:
        written = self.checkpoints.written()
        if written:
            transport.send(self.sched, StateCheckpointed(executor_id=self.executor_id, checkpoints=written))

    def _forget_states(self, msg: ForgetStates, payloads: list[object]) -> None:
        self.state.forget_states(msg.state_ids)
        self.checkpoints.forget(msg.state_ids)

    # --- peers and shuffle_meta -----------------------------------------------------------------

    def _on_peer(self, sock: zmq.Socket) -> None:
        transport.drain_dealer(sock, self.settings, self.log, self.from_peers, "peer", self._perform)

    def _on_data(self, sock: zmq.Socket) -> None:
        transport.drain_router(sock, self.settings, self.log, self.on_block_socket, "an executor's block socket", self._perform)

    def _peer(self, address: str) -> zmq.Socket:
        sock = self.peers.get(address)
        if sock is None:
            sock = transport.new_socket(self.ctx, zmq.DEALER, self.settings)
            sock.connect(address)
            self.loop.add_reader(sock, self._on_peer)
            self.peers[address] = sock
        self._peer_used[address] = time.monotonic()
        return sock

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

    # --- runner ---------------------------------------------------------------------------------

    def _on_runner(self, fd: int) -> None:
        self.runner.wakeup.drain()
        while self.runner.done:
            generation, task, outcome = self.runner.done.popleft()
            if generation == self.generation:
                self._perform(self.state.task_done(task, outcome, time.monotonic()))

    # --- actions --------------------------------------------------------------------------------

    def _perform(self, actions: list[Action] | None) -> None:
        runs: list[Run] = []
        for action in actions or ():
            if isinstance(action, Run):
                runs.append(action)  # after this batch's messages are on their way
            elif isinstance(action, ToScheduler):
                transport.send(self.sched, action.msg, action.payloads)
            elif isinstance(action, ToShuffleMeta):
                if self.meta is None:
                    self.log.error("no_shuffle_meta", message=type(action.msg).__name__)
                else:
                    transport.send(self.meta, action.msg)
            elif isinstance(action, ToPeer):
                if not transport.try_send(self._peer(action.address), action.msg, action.payloads):
                    # The peer's queue is full or it never connected: it is likely dead, and the
                    # scheduler will fail the jobs that needed it. Never stall the loop on it.
                    self.log.warning("peer_unreachable", address=action.address, message=type(action.msg).__name__)
            elif isinstance(action, Reply):
                transport.send(self.data, action.msg, action.payloads, to=action.peer)
            elif isinstance(action, CheckpointMapOutput):
                self.checkpoints.write_map_output(action.key, action.blocks)
            elif isinstance(action, StopTask):
                stopping = self.runner.stop(action.key, time.monotonic())
                self.log.info("stopping_task", job=action.key[0], stage=action.key[1], partition=action.key[2], on_runner=stopping)
            elif isinstance(action, CheckpointState):
                table = self.state.states.get((action.state_id, action.partition))
                if table is not None:
                    self.checkpoints.write_state(action.state_id, action.partition, action.batch, table)
        for run in runs:
            self._run(run)
        release = self.state.next_release()
        if release is not None and (self._release_at is None or release < self._release_at):
            self._release_at = release
            self.loop.call_at(release, self._release_held)

    def _release_held(self) -> None:
        self._release_at = None
        self._perform(self.state.release_due(time.monotonic()))

    def _run(self, run: Run) -> None:
        """Short stages run on the loop thread (no thread hand-off), each as a timer due now, so
        the loop polls its sockets between two tasks; others run on the runner thread."""
        if self.runner.expected_seconds(run.task.stage_key, run.spec) < self.settings.inline_task_max:
            generation = self.generation
            self.loop.call_later(0, lambda: self._run_inline(run, generation))
        else:
            self.runner.submit(self.generation, run.task, run.spec, run.inputs)

    def _run_inline(self, run: Run, generation: int) -> None:
        outcome = self.runner.run_inline(run.task, run.spec, run.inputs)
        if generation == self.generation:
            self._perform(self.state.task_done(run.task, outcome, time.monotonic()))
