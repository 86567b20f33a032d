"""Registering with the scheduler: asked again every REGISTER_RETRY seconds until it answers, and
again from the start when it forgets us (it restarted, or gave up on us)."""

from __future__ import annotations

from squall.common.core import Log
from squall.common.protocol import RegisterExecutor
from squall.services.executor.instructions import Activate, DiscardWork, Instruction, Reconnect, ToScheduler

REGISTER_RETRY = 1.0  # seconds between registrations until the scheduler answers


class Registration:
    def __init__(self, msg: RegisterExecutor) -> None:
        self.msg = msg
        self.registered = False
        self._due: float | None = None  # while registering: when to ask again

    def start(self, now: float) -> list[Instruction]:
        self._due = now + REGISTER_RETRY
        return [ToScheduler(self.msg)]

    def retry_if_due(self, now: float) -> list[Instruction]:
        return self.start(now) if self._due is not None and self._due <= now else []

    def accepted(self, shuffle_meta_address: str) -> list[Instruction]:
        self.registered, self._due = True, None
        return [Activate(shuffle_meta_address), Log("info", "registered", {"shuffle_meta": shuffle_meta_address})]

    def forgotten(self, now: float) -> list[Instruction] | None:
        """The scheduler wrote us off: register again on a fresh connection, our work discarded.
        None when we are registering again already."""
        if not self.registered:
            return None
        self.registered = False
        return [Log("warning", "scheduler_forgot_us"), Reconnect(), DiscardWork(), *self.start(now)]
