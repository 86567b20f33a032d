"""The messages the scheduler builds for a driver from a job's results (both modes)."""

from __future__ import annotations

from squall.common.protocol import JobDone, fits, frames_size


def job_done(job_id: str, results: dict[int, object], started: float, now: float) -> JobDone:
    return JobDone(job_id=job_id, elapsed=max(0.0, now - started), partitions=sorted(results), finished_at=now)


def result_blocks(results: dict[int, object]) -> tuple[object, ...]:
    return tuple(results[p] for p in sorted(results))


def result_too_large(job_id: str, results: dict[int, object], max_message_bytes: int) -> str:
    """Why a job's result cannot go to the driver in one JobDone ("" when it can): each partition
    fit in a message of its own, but the driver takes them all in one."""
    size = frames_size(list(results.values()))
    if fits(size, max_message_bytes):
        return ""
    return (
        f"the result of job {job_id} is {size} bytes, more than a message to the driver may carry "
        f"(max_message_bytes={max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); reduce it on the cluster before collecting "
        "(aggregate, filter, take), or raise the limit"
    )
