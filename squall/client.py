"""The driver's connection to a scheduler: submit a job, gather its result partitions."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

import zmq

from common import protocol, transport
from common.plan import LogicalPlan
from common.protocol import (
    ClusterStatus,
    ErrorReply,
    GetClusterStatus,
    JobDone,
    JobFailed,
    Message,
    PartitionResult,
    Ping,
    Pong,
    ProtocolError,
    SubmitJob,
)
from common.serialization import loads_block
from common.settings import Settings
from squall.errors import ConnectionError, ExecutorLostError, JobError, TaskError


class Client:
    """One DEALER socket to the scheduler. Thread-safe: one request at a time."""

    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self.settings = settings
        self._ctx = zmq.Context.instance()
        self._sock = transport.new_socket(self._ctx, zmq.DEALER, settings)
        self._sock.connect(address)
        self._lock = threading.Lock()
        self._nonce = itertools.count(1)
        self._jobs = itertools.count(1)
        self._session = uuid.uuid4().hex[:8]
        # Ping often enough that a silent scheduler is noticed within the silence timeout.
        self._ping_every = min(1.0, settings.scheduler_silence_timeout / 4)
        try:
            self.ping(timeout=settings.connect_timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._sock.close(0)

    # --- requests -------------------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> None:
        nonce = next(self._nonce)
        with self._lock:
            transport.send(self._sock, Ping(nonce=nonce))
            self._await(lambda m, p: isinstance(m, Pong) and m.nonce == nonce, timeout or self.settings.connect_timeout, "ping")

    def status(self) -> ClusterStatus:
        with self._lock:
            transport.send(self._sock, GetClusterStatus())
            msg, _ = self._await(lambda m, p: isinstance(m, ClusterStatus), self.settings.connect_timeout, "status")
            return msg  # type: ignore[return-value]

    def run_job(self, plan: LogicalPlan) -> list[list[Any]]:
        """Submit a plan and return its result partitions in order, or raise JobError."""
        job_id = f"{self._session}-{next(self._jobs)}"
        frames = protocol.encode(SubmitJob(job_id=job_id, plan=plan))
        size = protocol.frames_size(frames)
        if size > self.settings.max_message_bytes:
            raise JobError(
                job_id,
                "plan",
                f"the job's plan is {size} bytes, more than a message may carry (max_message_bytes="
                f"{self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); parallelize less data "
                "from the driver, or generate it on the executors",
            )
        with self._lock:
            self._sock.send_multipart(frames, copy=False)
            parts: dict[int, list[Any]] = {}
            last_heard = time.monotonic()
            next_ping = last_heard + self._ping_every
            while True:
                now = time.monotonic()
                if now - last_heard > self.settings.scheduler_silence_timeout:
                    raise ConnectionError(
                        f"the scheduler at {self.address} has not answered for "
                        f"{self.settings.scheduler_silence_timeout:g}s while job {job_id} ran"
                    )
                if now >= next_ping:
                    transport.send(self._sock, Ping(nonce=next(self._nonce)))
                    next_ping = now + self._ping_every
                if not self._sock.poll(max(1, int(self._ping_every * 1000 / 4))):
                    continue
                msg, payloads = self._recv()
                last_heard = time.monotonic()
                if isinstance(msg, PartitionResult) and msg.job_id == job_id:
                    parts[msg.partition] = loads_block(protocol.payload_bytes(payloads[0]))
                elif isinstance(msg, JobDone) and msg.job_id == job_id:
                    return [parts.get(i, []) for i in range(max(parts, default=-1) + 1)]
                elif isinstance(msg, JobFailed) and msg.job_id == job_id:
                    raise _job_error(msg)
                elif isinstance(msg, ErrorReply):
                    raise JobError(job_id, "protocol", f"the scheduler refused the job: {msg.reason}")
                # JobAccepted, Pongs and stale messages of earlier jobs need nothing.

    # --- plumbing -------------------------------------------------------------------------------

    def _recv(self) -> tuple[Message, list[object]]:
        frames = self._sock.recv_multipart(copy=False)
        try:
            return protocol.decode(frames, self.settings.max_message_bytes)
        except ProtocolError as exc:
            raise ConnectionError(f"the scheduler sent a message that does not decode: {exc}") from exc

    def _await(self, match: Any, timeout: float, what: str) -> tuple[Message, list[object]]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(max(1, int(remaining * 1000))):
                raise ConnectionError(f"no scheduler answered at {self.address} within {timeout:g}s ({what})")
            msg, payloads = self._recv()
            if match(msg, payloads):
                return msg, payloads
            if isinstance(msg, ErrorReply):
                raise ConnectionError(f"the scheduler answered {what} with an error: {msg.reason}")


def _job_error(msg: JobFailed) -> JobError:
    if msg.kind == "task":
        return TaskError(msg.job_id, msg.message, msg.error_type, msg.traceback, msg.stage_id, msg.partition)
    if msg.kind == "executor_lost":
        return ExecutorLostError(msg.job_id, msg.kind, msg.message, msg.stage_id, msg.partition)
    return JobError(msg.job_id, msg.kind, msg.message, msg.stage_id, msg.partition)
