"""What an executor tells the scheduler about a task: its failure, or (BSP) its completion.

A failure's text is cut to what a report may carry: user exceptions can quote whole records, and a
TaskFailed over the message limit would make ZeroMQ drop the connection it travels on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from squall.common.protocol import TaskDescriptor, TaskFailed, TaskFinished
from squall.services.executor.tasks import TaskOutput


@dataclass(frozen=True)
class Failure:
    kind: Literal["task", "fetch", "code", "block"]
    error_type: str
    message: str
    traceback: str = ""


def bounded(text: str, max_message_bytes: int, keep: str) -> str:
    """`text` cut to what a report may carry. `keep` is "head" (a message) or "ends" (a
    traceback: its start and its final lines)."""
    limit = min(64 * 1024, max_message_bytes // 16)  # characters; at most 4 bytes each in UTF-8
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit} characters cut: a failure report is limited to {limit} ...]\n"
    if keep == "head":
        return text[:limit] + note
    return text[: limit // 2] + note + text[-(limit // 2) :]


def _task(executor_id: str, task: TaskDescriptor) -> dict[str, Any]:
    """The fields naming a task attempt, in a report about it."""
    return {"executor_id": executor_id, "job_id": task.job_id, "stage_id": task.stage_id, "partition": task.partition,
            "attempt": task.attempt}


def task_failed(executor_id: str, task: TaskDescriptor, failure: Failure, max_message_bytes: int) -> TaskFailed:
    return TaskFailed(
        **_task(executor_id, task),
        kind=failure.kind,
        error_type=failure.error_type,
        message=bounded(failure.message, max_message_bytes, "head"),
        traceback=bounded(failure.traceback, max_message_bytes, "ends"),
    )


def task_finished(executor_id: str, task: TaskDescriptor, outcome: TaskOutput, started: float, now: float) -> TaskFinished:
    return TaskFinished(**_task(executor_id, task), has_result=outcome.is_result, output_bytes=outcome.size,
                        elapsed=max(0.0, now - started), skipped=outcome.skipped)
