"""The driver's connection to a scheduler: one DEALER socket, shared safely by threads.

Messages are sorted into mailboxes as they arrive: one per run (by run id, and by the ids of the
run's jobs), and one for control replies (Pong, ClusterStatus, Metrics). Drizzle results that
executors send straight to the driver come in on a second socket (result_socket.py), polled
with the first, and go to their run's mailbox too. Whoever waits pumps the
socket for everyone, so a user iterating over one run's results may start another run, or ask
for the cluster's status, inside the loop. A scheduler that stays silent while something waits
is reported as a ConnectionError, never a hang.

Several threads may wait at once (a stream's results and a batch action's, say). One of them
reads the socket (it holds `_lock`); the others sleep on `_arrived`, which the reader notifies
for every message it sorts, so a message reaches its thread at once, not when that thread next
gets the socket (which a reader polling for its own run could hold for a whole poll). A thread
that wants to send interrupts the reader's poll through a pipe (`_senders_wake`), and a
thread that gives the socket up wakes the sleepers, one of which reads next.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import msgspec
import zmq

from squall.common import protocol, security, transport
from squall.common.handshake import LOCAL_CLUSTER_HINT, ConnectionProbe, address_problem
from squall.common.protocol import (
    CancelRun,
    ClusterStatus,
    ErrorReply,
    ForgetPersisted,
    ForgetStates,
    GetClusterStatus,
    GetMetrics,
    GetSnapshot,
    JobSpec,
    Message,
    Metrics,
    Ping,
    Pong,
    Priority,
    ProtocolError,
    Snapshot,
    StreamProgress,
    SubmitJobs,
)
from squall.common.settings import Settings
from squall.errors import ConnectionError, JobError
from squall.result_socket import ResultArrived, ResultSocket

Event = tuple[Message, list[object]]
CONTROL = "__control__"
CONTROL_KEPT = 64  # control replies kept for the threads that asked for them
CANCEL_LINGER_MS = 200  # on close, how long the cancels of runs in flight may take to leave


class SchedulerRestarted(Message, frozen=True):
    """Not on the wire: put in every run's mailbox when the scheduler's incarnation changes."""

    incarnation: str


class WaitExpired(ConnectionError):
    """A wait with a deadline saw it pass before its message came."""


class Client:
    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self.settings = settings
        if problem := address_problem(address, "scheduler"):
            raise ConnectionError(problem)
        try:
            security.check(settings, [address])
        except security.SecurityError as exc:
            keyless = not settings.plaintext and not settings.curve_secret_key
            raise ConnectionError(f"cannot connect to {address}: {exc}" + (f"; {LOCAL_CLUSTER_HINT}" if keyless else "")) from None
        self._lock = threading.Lock()  # held while using the socket
        self._arrived = threading.Condition()  # guards the mailboxes; notified when one fills or the socket is free
        self._senders = 0  # threads waiting for the socket to send: a waiting reader lets them go first
        self._senders_wake = transport.Wakeup()  # ends the reader's poll when a sender waits
        # Control replies nobody took (their asker gave up waiting) fall off the end.
        self._boxes: dict[str, deque[Event]] = {CONTROL: deque(maxlen=CONTROL_KEPT)}
        self._ctx: zmq.SyncContext = zmq.Context.instance()
        self._sock = transport.new_socket(self._ctx, zmq.DEALER, settings)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._senders_wake.fd, zmq.POLLIN)
        # Drizzle results come straight from the executors, to a socket of their own.
        self.results: ResultSocket | None = None
        if settings.direct_results:
            try:
                self.results = ResultSocket(address, settings)
                security.check(settings, [self.results.address])
            except (zmq.ZMQError, security.SecurityError) as exc:
                self.close()
                raise ConnectionError(
                    f"cannot open the driver's result socket: {exc}; set driver_host (SQUALL_DRIVER_HOST) to an address "
                    "of this host executors can reach, or direct_results=false (SQUALL_DIRECT_RESULTS) to take results through the scheduler"
                ) from None
            self._poller.register(self.results.sock, zmq.POLLIN)
        probe = ConnectionProbe(self._sock, address, settings)  # before connecting: it sees every attempt
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            probe.close()
            self.close()
            raise ConnectionError(f"cannot connect to {address}: {exc}") from None
        self._route: dict[str, str] = {}  # job id -> run id
        self._nonce = itertools.count(1)
        self._runs = itertools.count(1)
        self._session = uuid.uuid4().hex[:8]
        self.sent_code: set[str] = set()  # code keys the scheduler has from this client
        # Ids of the plan nodes the scheduler has from this client (plan deltas): at most
        # settings.plan_cache_nodes of them, as the scheduler keeps no more.
        self.sent_nodes: set[str] = set()
        # Ping often enough that a silent scheduler is noticed within the silence timeout.
        self._ping_every = min(1.0, settings.scheduler_silence_timeout / 4)
        self._last_heard = time.monotonic()
        self._last_ping = 0.0
        # Silence counts from when a thread began reading the socket, not from a wait's start:
        # a thread taking one result after another (each a wait of its own) on a scheduler that
        # died must not put off noticing it. A gap in reading restarts the count.
        self._last_pump = 0.0
        self._listening_since = time.monotonic()
        self.scheduler_incarnation = ""  # from its Pongs: when it changes, the scheduler restarted
        try:
            try:
                self._handshake(probe, settings.connect_timeout)
            finally:
                probe.close()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection; runs still in flight are cancelled (the scheduler would notice the
        dropped connection anyway; this says so first, and lingers a moment for it to go out)."""
        if self._sock.closed:
            return
        in_flight = [run_id for run_id in self._boxes if run_id != CONTROL]
        with self._socket():
            for run_id in in_flight:
                transport.try_send(self._sock, CancelRun(run_id=run_id))  # never block a close
            self._sock.close(linger=CANCEL_LINGER_MS if in_flight else 0)
            if self.results is not None:  # results still on their way are dropped: their runs are cancelled
                self.results.close()
                self.results = None
        self._senders_wake.close()

    def _check_open(self) -> None:
        if self._sock.closed:
            raise ConnectionError(
                f"this context is closed (close() was called, or its with block ended): connect to {self.address} again"
            )

    def _handshake(self, probe: ConnectionProbe, timeout: float) -> None:
        """The first Ping: a scheduler's Pong, or an error that says what is at the address instead
        (nothing, a service holding other keys, or a Squall service that is not the scheduler)."""
        nonce = next(self._nonce)
        deadline = time.monotonic() + timeout
        control = self._boxes[CONTROL]
        sent = False
        while True:
            if not sent:
                # Without blocking: a connection whose handshake never completes (a plaintext
                # scheduler, keys it refuses) takes no message, and a blocking send would wait
                # forever, past the timeout and the probe that tells why.
                self._check_open()
                with self._socket():
                    sent = transport.try_send(self._sock, Ping(nonce=nonce))
            while control:
                msg, _ = control.popleft()
                if isinstance(msg, Pong) and msg.nonce == nonce:
                    if msg.service != "scheduler":
                        raise ConnectionError(
                            f"{self.address} is a Squall {msg.service}, not a scheduler: connect to the scheduler's address "
                            "(a LocalCluster's is cluster.address; or use cluster.connect())"
                        )
                    return
                if isinstance(msg, ErrorReply):
                    raise ConnectionError(f"{self.address} answered the connection with an error: {msg.reason}")
            if probe.poll():
                raise ConnectionError(f"cannot connect to {self.address}: {probe.refused}")
            if time.monotonic() >= deadline:
                raise ConnectionError(probe.silence("scheduler", timeout))
            if sent:
                with self._socket():
                    self._pump(keep_alive=False)
            else:
                time.sleep(0.005)  # the connection is not up yet: try the Ping again shortly (until the deadline)

    # --- control requests -----------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> None:
        nonce = next(self._nonce)
        self._send(Ping(nonce=nonce))
        self._control(lambda m: isinstance(m, Pong) and m.nonce == nonce, timeout or self.settings.connect_timeout, "ping")

    def status(self) -> ClusterStatus:
        self._send(GetClusterStatus())
        return self._control(lambda m: isinstance(m, ClusterStatus), self.settings.connect_timeout, "status")  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        """The cluster as the scheduler sees it (docs/observability.md lists the fields)."""
        self._send(GetSnapshot())
        reply = self._control(lambda m: isinstance(m, Snapshot), self.settings.connect_timeout, "snapshot")
        snapshot: dict[str, Any] = msgspec.json.decode(cast(Snapshot, reply).json)
        return snapshot

    def report_progress(self, progress: StreamProgress) -> None:
        """Tell the scheduler a stream batch was delivered (its dashboard and metrics); never
        waited on, and a failure to send is the stream's loss of a plot point, nothing more."""
        try:
            self._send(progress)
        except Exception:  # noqa: BLE001, S110 - never let reporting break a stream; the next batch reports again
            pass

    def metrics(self) -> Metrics:
        self._send(GetMetrics())
        return self._control(lambda m: isinstance(m, Metrics), self.settings.connect_timeout, "metrics")  # type: ignore[return-value]

    # --- runs -----------------------------------------------------------------------------------

    def new_run_id(self) -> str:
        return f"{self._session}-{next(self._runs)}"

    def submit(
        self, run_id: str, jobs: list[JobSpec], code: dict[str, bytes], group_size: int, preschedule: bool, barrier: bool, first_batch: int = 0,
        resume_states: dict[str, int] | None = None, priority: Priority = "latency", mailbox: str = "", all_code: bool = False,
        stream_id: str = "",
    ) -> int:
        """Send a run, with the code its plans name that the scheduler has not had from us (all
        of it with `all_code`: the scheduler may have lost it); its tasks run with `priority` on
        the executors. Its messages go to the mailbox of run `mailbox` when given (a job sent
        again on that run's behalf), to its own otherwise. Returns the size of the message sent,
        in bytes."""
        with self._arrived:  # the reading thread sorts into these
            self._boxes[run_id] = self._boxes[mailbox] if mailbox else deque()
            for job in jobs:
                self._route[job.job_id] = run_id
        new_code = dict(code) if all_code else {k: v for k, v in code.items() if k not in self.sent_code}
        msg = SubmitJobs(
            run_id=run_id, jobs=jobs, code=new_code, group_size=group_size, preschedule=preschedule, barrier=barrier, first_batch=first_batch,
            resume_states=resume_states or {}, priority=priority, result_to=self.result_address if preschedule else "",
            stream_id=stream_id,
        )
        self._check_open()
        frames = protocol.encode(msg)
        # The scheduler sends executors the run's stages with all the code they use, including
        # code this driver sent before: a launch carries up to all of it in one message.
        size = protocol.frames_size(frames) + sum(len(blob) for key, blob in code.items() if key not in new_code)
        if size > self.settings.max_message_bytes:
            self.forget(run_id)
            raise JobError(
                jobs[0].job_id if jobs else run_id,
                "plan",
                f"the submission (with the code it uses) is {size} bytes, more than a message may carry (max_message_bytes="
                f"{self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); parallelize less data "
                "from the driver, or generate it on the executors",
            )
        with self._socket():
            transport.send_frames(self._sock, frames)
        self.sent_code.update(new_code)
        for job in jobs:
            if job.delta is not None:
                self.sent_nodes.update(definition.id for definition in job.delta.nodes)
        if len(self.sent_nodes) > self.settings.plan_cache_nodes:
            self.sent_nodes.clear()  # more than the scheduler keeps: let the next jobs send their lineage again
        return protocol.frames_size(frames)

    def forget_sent(self) -> None:
        """The scheduler no longer has what this client sent it (it restarted): later
        submissions send their code and plan nodes again."""
        self.sent_code.clear()
        self.sent_nodes.clear()

    def cancel(self, run_id: str) -> None:
        if self._sock.closed:
            return  # the context was closed: its runs died with it
        self._send(CancelRun(run_id=run_id))

    def forget_states(self, state_ids: list[str]) -> None:
        """A stream ended: the cluster may drop its keyed state and checkpoints."""
        if state_ids and not self._sock.closed:
            self._send(ForgetStates(state_ids=state_ids))

    def forget_persisted(self, dataset_ids: list[str]) -> None:
        """Persisted datasets the driver unpersisted: the cluster drops their blocks."""
        if dataset_ids and not self._sock.closed:
            self._send(ForgetPersisted(dataset_ids=dataset_ids))

    @property
    def result_address(self) -> str:
        """Where executors send results straight to this driver ("": through the scheduler)."""
        return self.results.address if self.results is not None else ""

    def next_event(self, run_id: str) -> Event:
        """The run's next message (JobDone, JobFailed, RunDone, ResultArrived), waiting as needed."""
        return self._wait(run_id, f"run {run_id}")

    def next_event_until(self, run_id: str, deadline: float) -> Event | None:
        """The run's next message, or None if none comes before `deadline` (time.monotonic())."""
        try:
            return self._wait(run_id, f"run {run_id}", deadline=deadline)
        except WaitExpired:
            return None

    def forget(self, run_id: str) -> None:
        """Stop keeping the run's messages (after RunDone, or when the caller gave up on it)."""
        with self._arrived:
            self._boxes.pop(run_id, None)
            for job_id in [j for j, r in self._route.items() if r == run_id]:
                del self._route[job_id]

    # --- plumbing -------------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        self._check_open()
        with self._socket():
            transport.send(self._sock, msg)

    def _control(self, match: Callable[[Message], bool], timeout: float, what: str) -> Message:
        """The control reply `match` picks (or an ErrorReply), waiting until `timeout`. Threads
        may ask at once (a stream's pings and status, a user's snapshot): each takes only its
        own reply and leaves the others' in the mailbox."""
        msg, _ = self._wait(CONTROL, what, deadline=time.monotonic() + timeout,
                            match=lambda m: match(m) or isinstance(m, ErrorReply))
        if isinstance(msg, ErrorReply) and not match(msg):
            raise ConnectionError(f"the scheduler answered {what} with an error: {msg.reason}")
        return msg

    @contextmanager
    def _socket(self) -> Iterator[None]:
        """The socket, to send on: a reader polling it is asked to let go first (only then is the
        pipe written: most sends find the socket free)."""
        if not self._lock.acquire(blocking=False):
            with self._arrived:
                self._senders += 1
            try:
                self._senders_wake.signal()
                self._lock.acquire()
            finally:
                with self._arrived:
                    self._senders -= 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._lock.release()
        with self._arrived:
            self._arrived.notify_all()  # a thread waiting for its mailbox may read the socket now

    def _wait(self, box: str, what: str, deadline: float | None = None, match: Callable[[Message], bool] | None = None) -> Event:
        """The next message in `box` (the first one `match` picks, when given), reading the
        socket for everyone while waiting."""
        started = time.monotonic()
        if started - self._last_pump > self._ping_every:  # nobody read the socket meanwhile: its silence is unknown
            self._listening_since = started
        while True:
            with self._arrived:
                found = self._find(box, match)
                if found is not None:
                    event = self._boxes[box][found]
                    del self._boxes[box][found]
                    return event
            self._check_open()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitExpired(f"no scheduler answered at {self.address} within {deadline - started:.3g}s ({what})")
            if deadline is None and now - max(self._last_heard, self._listening_since) > self.settings.scheduler_silence_timeout:
                raise ConnectionError(
                    f"the scheduler at {self.address} has not answered for {self.settings.scheduler_silence_timeout:g}s ({what})"
                )
            if not self._senders and self._lock.acquire(blocking=False):
                try:
                    if self._find(box, match) is None:
                        self._pump(deadline is None)
                finally:
                    self._release()
                continue
            with self._arrived:  # another thread reads (or sends): it wakes us when it sorts a message or lets go
                if self._find(box, match) is None:
                    self._arrived.wait(self.RECHECK_SECONDS)

    def _find(self, box: str, match: Callable[[Message], bool] | None) -> int | None:
        """Where in `box` the first message `match` picks is (any message without `match`)."""
        mailbox = self._boxes.get(box)
        if not mailbox:
            return None
        if match is None:
            return 0
        return next((i for i, (msg, _) in enumerate(mailbox) if match(msg)), None)

    # How long a thread waiting for its mailbox sleeps before it checks its deadline and the
    # socket again even if nobody woke it (they do: this is a safety net, not the way in).
    RECHECK_SECONDS = 0.05

    def _pump(self, keep_alive: bool) -> None:
        """Under the lock: read what has arrived (briefly waiting, unless a sender wants the
        socket) and sort it into mailboxes."""
        now = self._last_pump = time.monotonic()
        if keep_alive and now - self._last_ping > self._ping_every:
            transport.send(self._sock, Ping(nonce=0))
            self._last_ping = now
        ready = dict(self._poller.poll(0 if self._senders else 20))
        if self._senders_wake.fd in ready:
            self._senders_wake.drain()
        if self.results is not None and self.results.sock in ready:
            arrived = self.results.receive()
            with self._arrived:
                for result, payloads in arrived:
                    self._sort(result, payloads)
                self._arrived.notify_all()
        if self._sock not in ready:
            return
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._last_heard = time.monotonic()
            try:
                msg, payloads = protocol.decode(frames, self.settings.max_message_bytes)
            except ProtocolError as exc:
                raise ConnectionError(f"the scheduler sent a message that does not decode: {exc}") from exc
            with self._arrived:
                self._sort(msg, payloads)
                self._arrived.notify_all()

    def _sort(self, msg: Message, payloads: list[object]) -> None:
        if isinstance(msg, Pong) and msg.incarnation and msg.incarnation != self.scheduler_incarnation:
            if self.scheduler_incarnation:  # a new scheduler process: what ran on the old one is gone
                self.forget_sent()
                for run_id, waiting in self._boxes.items():
                    if run_id != CONTROL:
                        waiting.append((SchedulerRestarted(incarnation=msg.incarnation), []))
            self.scheduler_incarnation = msg.incarnation
        if isinstance(msg, Pong) and msg.nonce == 0:
            return  # a keep-alive answer: hearing it was the point
        job_id = msg.result.job if isinstance(msg, ResultArrived) else getattr(msg, "job_id", "")
        key = getattr(msg, "run_id", None) or self._route.get(job_id, None)
        if key is None:
            if isinstance(msg, ResultArrived):
                return  # a result of a run nobody waits for any more (a replay's, after the run ended)
            if isinstance(msg, ErrorReply) and len(self._boxes) > 1:
                # An error about a submission: every run waiting should hear it.
                for waiting in self._boxes.values():
                    waiting.append((msg, payloads))
                return
            key = CONTROL
        box = self._boxes.get(key)
        if box is not None:  # messages of runs nobody waits for any more are dropped
            box.append((msg, payloads))
