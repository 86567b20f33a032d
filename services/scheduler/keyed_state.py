"""What the scheduler keeps to recover a stream's keyed state: pure, no sockets.

A stateful stage's partition lives on one executor (its owner) from the first batch on, so its
state never moves while that executor lives. Owners checkpoint their partitions at the end of
every `checkpoint_every`-th group of the state (StateCheckpointed tells the scheduler), and the
scheduler keeps the plans of the batches after the oldest checkpoint: what a new owner replays,
from that checkpoint, to rebuild a partition whose owner died.

When an owner dies its partitions get new owners, spread over the survivors (or all on one, with
replay "single"), and wait for a restore: the next group of the state is preceded by a replay
group that loads each partition's checkpoint and replays the batches between it and the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from squall.services.scheduler.groups import PlannedJob


@dataclass
class KeyedState:
    state_id: str
    partitions: int
    stage_id: int  # the stateful stage's index in the plans of this state's jobs
    first_batch: int  # the state starts empty before this batch
    owners: dict[int, str] = field(default_factory=dict)  # partition -> executor id
    checkpoints: dict[int, int] = field(default_factory=dict)  # partition -> newest checkpointed batch
    retained: dict[int, PlannedJob] = field(default_factory=dict)  # batch -> its job, for replays
    groups: int = 0  # groups dispatched with this state
    restoring: set[int] = field(default_factory=set)  # partitions waiting for a restore

    def checkpoint_of(self, partition: int) -> int:
        """The newest batch the partition can be rebuilt from (first_batch - 1: from empty)."""
        return self.checkpoints.get(partition, self.first_batch - 1)

    def oldest_checkpoint(self) -> int:
        return min(self.checkpoint_of(p) for p in range(self.partitions))


@dataclass(frozen=True)
class Restore:
    """A partition to rebuild on `owner`: load the checkpoint at or before `up_to`, then replay."""

    state_id: str
    partition: int
    owner: str
    up_to: int
    first_batch: int


class StateBook:
    def __init__(self, checkpoint_every: int, replay: str = "parallel", map_outputs: bool = True) -> None:
        self.checkpoint_every = checkpoint_every
        self.replay = replay
        self.map_outputs = map_outputs  # checkpoint the map outputs that feed keyed state
        self.states: dict[str, KeyedState] = {}

    # --- placement --------------------------------------------------------------------------

    def stateful_stages(self, job: PlannedJob) -> list[tuple[int, str, int]]:
        """(stage id, state id, partitions) of the job's stateful stages."""
        return [
            (stage.stage_id, stage.spec.state.state_id, stage.spec.partitions)
            for stage in job.plan.stages
            if stage.spec.state is not None
        ]

    def owner(self, state_id: str, partition: int, default: str) -> str:
        state = self.states[state_id]
        return state.owners.setdefault(partition, default)

    def note_group(self, jobs: list[PlannedJob]) -> set[str]:
        """A group is being dispatched: keep its jobs' plans for replay, and say which jobs'
        stateful tasks checkpoint (the last job of every checkpoint_every-th group of a state)."""
        checkpointing: set[str] = set()
        for state_id in {sid for job in jobs if not job.replay_only for _, sid, _ in self.stateful_stages(job)}:
            state = self.states[state_id]
            state.groups += 1
            last = max((j for j in jobs if not j.replay_only and state_id in self.state_ids(j)), key=lambda j: j.batch)
            if state.groups % self.checkpoint_every == 0:
                checkpointing.add(last.job_id)
        for job in jobs:
            if job.replay_only:
                continue
            for _, state_id, _ in self.stateful_stages(job):
                self.states[state_id].retained[job.batch] = job
        return checkpointing

    def register(self, job: PlannedJob) -> None:
        """Learn the states a submitted job uses (a new state starts empty at this batch)."""
        for stage_id, state_id, partitions in self.stateful_stages(job):
            if state_id not in self.states:
                self.states[state_id] = KeyedState(state_id, partitions, stage_id, first_batch=job.batch)

    def state_ids(self, job: PlannedJob) -> set[str]:
        return {sid for _, sid, _ in self.stateful_stages(job)}

    # --- checkpoints ------------------------------------------------------------------------

    def checkpointed(self, state_id: str, partition: int, batch: int) -> int | None:
        """A checkpoint was written. Returns the state's new oldest checkpoint if it advanced
        (plans and map outputs of batches up to it are no longer needed), else None."""
        state = self.states.get(state_id)
        if state is None or not 0 <= partition < state.partitions:
            return None
        before = state.oldest_checkpoint()
        if batch <= state.checkpoint_of(partition):
            return None
        state.checkpoints[partition] = batch
        after = state.oldest_checkpoint()
        if after <= before:
            return None
        for b in [b for b in state.retained if b <= after]:
            del state.retained[b]
        return after

    def resume(self, state_id: str, checkpoint: int, executors: list[str], replays: list[PlannedJob]) -> None:
        """A driver resumes a stream this scheduler has never seen (it restarted): every partition
        restarts from its checkpoint (at or after `checkpoint`; -1: from empty, before the replays)
        on a new owner, and `replays` are the batches between the checkpoint and the next one."""
        state = self.states[state_id]
        state.first_batch = min([checkpoint + 1, *(j.batch for j in replays)])
        if checkpoint >= 0:
            state.checkpoints = dict.fromkeys(range(state.partitions), checkpoint)
        ordered = sorted(executors)
        state.owners = {p: ordered[p % len(ordered)] for p in range(state.partitions)} if ordered else {}
        state.restoring = set(range(state.partitions))
        for job in replays:
            if state_id in self.state_ids(job):
                state.retained[job.batch] = job

    def forget(self, state_ids: list[str]) -> None:
        for state_id in state_ids:
            self.states.pop(state_id, None)

    # --- failures ---------------------------------------------------------------------------

    def executor_lost(self, executor_id: str, survivors: list[str]) -> list[tuple[str, int, str]]:
        """Give the dead executor's partitions new owners: spread round robin over the survivors
        (replay "parallel"), or all to the first (replay "single"). Returns (state, partition, new owner)."""
        moved: list[tuple[str, int, str]] = []
        if not survivors:
            return moved
        ordered = sorted(survivors)
        turn = 0
        for state_id in sorted(self.states):
            state = self.states[state_id]
            for partition in sorted(p for p, owner in state.owners.items() if owner == executor_id):
                new_owner = ordered[0] if self.replay == "single" else ordered[turn % len(ordered)]
                turn += 1
                state.owners[partition] = new_owner
                state.restoring.add(partition)
                moved.append((state_id, partition, new_owner))
        return moved

    def pending_restores(self, job: PlannedJob) -> tuple[list[Restore], list[PlannedJob], str | None]:
        """Before `job` (the first of a group) runs: the partitions of its states to rebuild, the
        retained jobs to replay for them, oldest first, and an error if a needed plan is gone."""
        restores: list[Restore] = []
        replays: dict[int, PlannedJob] = {}
        for state_id in sorted(self.state_ids(job)):
            state = self.states[state_id]
            for partition in sorted(state.restoring):
                since = state.checkpoint_of(partition)
                restores.append(Restore(state_id, partition, state.owners[partition], job.batch - 1, state.first_batch))
                for batch in range(since + 1, job.batch):
                    retained = state.retained.get(batch)
                    if retained is None:
                        return [], [], (
                            f"cannot rebuild partition {partition} of keyed state {state_id}: the plan of "
                            f"batch {batch} is no longer kept"
                        )
                    replays[batch] = retained
            state.restoring.clear()
        return restores, [replays[b] for b in sorted(replays)], None

    def replay_partitions(self, job: PlannedJob, restores: list[Restore]) -> dict[int, set[int]]:
        """For a replayed job: stateful stage id -> the partitions that need the batch applied."""
        wanted: dict[int, set[int]] = {}
        for stage_id, state_id, _ in self.stateful_stages(job):
            state = self.states[state_id]
            for r in restores:
                if r.state_id == state_id and state.checkpoint_of(r.partition) < job.batch:
                    wanted.setdefault(stage_id, set()).add(r.partition)
        return wanted
