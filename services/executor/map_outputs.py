"""The map outputs this executor holds: one block per reduce partition, kept for fetches.

A finished map task's blocks go to its pre-scheduled reducers (Drizzle): pushed with the notice
when small, otherwise a BlocksReady notice the reducer answers with a fetch. Their locations reach
shuffle_meta off the critical path (after the group's report; at once in BSP, where reducers look
them up), and all of them again when shuffle_meta restarts empty.
"""

from __future__ import annotations

from squall.common.core import Send, ToShuffleMeta
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    ErrorReply,
    FetchBlocks,
    MapLocation,
    MapOutput,
    PushBlocks,
    RegisterMapOutputs,
    TaskDescriptor,
    fits,
)
from squall.common.settings import Settings
from squall.services.executor.instructions import ToPeer
from squall.services.executor.shuffle_inputs import BlockKey


class MapOutputStore:
    def __init__(self, executor_id: str, data_address: str, settings: Settings) -> None:
        self.executor_id = executor_id
        self.data_address = data_address
        self.settings = settings
        self.blocks: dict[BlockKey, list[bytes]] = {}
        self._unregistered: list[MapOutput] = []  # map outputs shuffle_meta has not heard of yet

    def tracked(self) -> dict[str, int]:
        return {"store": len(self.blocks), "unregistered": len(self._unregistered)}

    def keep(self, task: TaskDescriptor, shuffle_id: int, blocks: list[bytes]) -> tuple[list[ToPeer], list[int]]:
        """Keep a map task's blocks. Returns the messages for its reducers elsewhere, and the
        reduce partitions whose reducers live here (their blocks are delivered without a message)."""
        self.blocks[(task.job_id, shuffle_id, task.partition)] = blocks
        location = MapLocation(task.partition, self.executor_id, self.data_address, [len(b) for b in blocks])
        self._unregistered.append(MapOutput(job_id=task.job_id, shuffle_id=shuffle_id, location=location))
        by_address: dict[str, list[int]] = {}
        for reduce_partition, address in enumerate(task.push_to):
            if address:  # "": a rebuild needs no block for that partition
                by_address.setdefault(address, []).append(reduce_partition)
        local = by_address.pop(self.data_address, [])
        sends: list[ToPeer] = []
        for address, parts in by_address.items():
            if self._pushable(sum(len(blocks[r]) for r in parts)):
                push = PushBlocks(job_id=task.job_id, shuffle_id=shuffle_id, map_partition=task.partition, reduce_partitions=parts)
                sends.append(ToPeer(address, push, tuple(blocks[r] for r in parts)))
            else:
                notice = BlocksReady(job_id=task.job_id, shuffle_id=shuffle_id, map_partition=task.partition,
                                     reduce_partitions=parts, address=self.data_address)
                sends.append(ToPeer(address, notice))
        return sends, local

    def _pushable(self, size: int) -> bool:
        """Small enough to travel with the notice; larger blocks are fetched by the reducer, and
        a block over the message limit is refused there with an error naming the limit."""
        return size <= self.settings.push_inline_max_bytes and fits(size, self.settings.max_message_bytes)

    def register(self) -> list[ToShuffleMeta]:
        """Tell shuffle_meta about the outputs it has not heard of."""
        if not self._unregistered:
            return []
        outputs, self._unregistered = self._unregistered, []
        return [ToShuffleMeta(RegisterMapOutputs(outputs=outputs))]

    def register_all(self) -> list[ToShuffleMeta]:
        """shuffle_meta came back empty: every output held here, again."""
        outputs = [
            MapOutput(job_id=job_id, shuffle_id=shuffle_id,
                      location=MapLocation(map_partition, self.executor_id, self.data_address, [len(b) for b in blocks]))
            for (job_id, shuffle_id, map_partition), blocks in self.blocks.items()
        ]
        self._unregistered = []
        return [ToShuffleMeta(RegisterMapOutputs(outputs=outputs))] if outputs else []

    def serve(self, peer: bytes, msg: FetchBlocks) -> Send:
        frames = []
        for part in msg.map_partitions:
            blocks = self.blocks.get((msg.job_id, msg.shuffle_id, part))
            if blocks is None or msg.reduce_partition >= len(blocks):
                reason = f"executor {self.executor_id} has no block for job {msg.job_id} shuffle {msg.shuffle_id} map {part}"
                return Send(peer, ErrorReply(reason=reason, request_id=msg.request_id))
            frames.append(blocks[msg.reduce_partition])
        size = sum(len(f) for f in frames)
        if not fits(size, self.settings.max_message_bytes):
            reason = (
                f"shuffle blocks for reduce partition {msg.reduce_partition} are {size} bytes, more than a "
                f"message may carry (max_message_bytes={self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); "
                "use more partitions, or make records smaller"
            )
            return Send(peer, ErrorReply(reason=reason, request_id=msg.request_id))
        return Send(peer, Blocks(request_id=msg.request_id, map_partitions=list(msg.map_partitions)), tuple(frames))

    def release(self, jobs: set[str], cancelled: bool) -> None:
        """Jobs are over: their blocks go; a cancelled job's locations are never registered."""
        self.blocks = {k: v for k, v in self.blocks.items() if k[0] not in jobs}
        if cancelled:
            self._unregistered = [o for o in self._unregistered if o.job_id not in jobs]
