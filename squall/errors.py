"""Errors a Squall user sees."""

from __future__ import annotations

import builtins


class SquallError(Exception):
    """Base of every error Squall raises to users."""


class ConnectionError(SquallError, builtins.ConnectionError):  # noqa: A001 - ours, and a builtin ConnectionError too
    """The scheduler cannot be reached, or went silent (or the context was closed). Also a
    builtin ConnectionError, so `except ConnectionError` catches it whichever is meant."""


class SchedulerRestartedError(ConnectionError):
    """The scheduler restarted while runs were in flight there: they are gone (a stream resumes
    by itself from its checkpoints; a batch run can be submitted again)."""


class JobError(SquallError):
    """A job failed. `kind` says why: task, executor_lost, plan, fetch, no_executors, or
    results_lost (its results were sent straight to the driver but did not arrive)."""

    def __init__(self, job_id: str, kind: str, message: str, stage_id: int = -1, partition: int = -1, batch: int = -1) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.kind = kind
        self.stage_id = stage_id
        self.partition = partition
        self.batch = batch  # the job's index in its run (run_jobs / iter_jobs)


class TaskError(JobError):
    """A user function raised on an executor. `remote_traceback` is the executor's traceback."""

    def __init__(
        self, job_id: str, message: str, error_type: str, remote_traceback: str, stage_id: int, partition: int, batch: int = -1
    ) -> None:
        super().__init__(job_id, "task", message, stage_id, partition, batch)
        self.error_type = error_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        if not self.remote_traceback:  # failures Squall detected itself (a result too large, ...)
            return str(self.args[0])
        return f"{self.args[0]}\n\nRemote traceback:\n{self.remote_traceback}"


class ExecutorLostError(JobError):
    """An executor the job depended on died."""
