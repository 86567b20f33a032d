"""Per-partition adapters for Dataset operations. They are referenced by name from pickled plans,
so executors import this module; keep their signatures stable."""

from __future__ import annotations

import functools
import itertools
import operator
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from squall.common import dataset_checkpoints, skips, task_partition, text_files


def map_op(fn: Callable[[Any], Any], records: Iterator[Any]) -> Iterator[Any]:
    return map(fn, records)


def flat_map_op(fn: Callable[[Any], Iterable[Any]], records: Iterator[Any]) -> Iterator[Any]:
    return itertools.chain.from_iterable(map(fn, records))


def filter_op(fn: Callable[[Any], bool], records: Iterator[Any]) -> Iterator[Any]:
    return filter(fn, records)


def partition_op(fn: Callable[[Iterator[Any]], Iterable[Any]], records: Iterator[Any]) -> Iterable[Any]:
    out = fn(records)
    if out is None:
        raise TypeError(f"map_partitions function {getattr(fn, '__qualname__', fn)!r} returned None, not an iterable")
    return out


def skipping_map_op(fn: Callable[[Any], Any], records: Iterator[Any]) -> Iterator[Any]:
    """map, skipping (and counting) the records fn raises on."""
    for record in records:
        try:
            out = fn(record)
        except Exception:
            skips.record_skipped()
            continue
        yield out


def skipping_flat_map_op(fn: Callable[[Any], Iterable[Any]], records: Iterator[Any]) -> Iterator[Any]:
    for record in records:
        try:
            out = list(fn(record))
        except Exception:
            skips.record_skipped()
            continue
        yield from out


def skipping_filter_op(fn: Callable[[Any], bool], records: Iterator[Any]) -> Iterator[Any]:
    for record in records:
        try:
            keep = fn(record)
        except Exception:
            skips.record_skipped()
            continue
        if keep:
            yield record


SKIPPING = {map_op: skipping_map_op, flat_map_op: skipping_flat_map_op, filter_op: skipping_filter_op}


def count_op(records: Iterator[Any]) -> list[int]:
    return [sum(1 for _ in records)]


_EMPTY = object()


def reduce_op(fn: Callable[[Any, Any], Any], records: Iterator[Any]) -> list[Any]:
    """A partition's partial reduction, or nothing for an empty partition."""
    first = next(records, _EMPTY)
    if first is _EMPTY:
        return []
    return [functools.reduce(fn, records, first)]


# --- (key, value) records ------------------------------------------------------------------------


def _pair(record: Any, operation: str) -> tuple[Any, Any]:
    if type(record) is tuple and len(record) == 2:
        return record
    try:
        key, value = record
    except (TypeError, ValueError):
        raise TypeError(f"{operation}() needs (key, value) pairs, got {type(record).__name__}: {record!r:.200}") from None
    return key, value


def map_values_op(fn: Callable[[Any], Any], records: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    for record in records:
        key, value = _pair(record, "map_values")
        yield key, fn(value)


def flat_map_values_op(fn: Callable[[Any], Iterable[Any]], records: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    for record in records:
        key, value = _pair(record, "flat_map_values")
        for out in fn(value):
            yield key, out


def skipping_map_values_op(fn: Callable[[Any], Any], records: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    """map_values, skipping (and counting) the records fn raises on, and those that are not pairs."""
    for record in records:
        try:
            key, value = _pair(record, "map_values")
            out = fn(value)
        except Exception:
            skips.record_skipped()
            continue
        yield key, out


def skipping_flat_map_values_op(fn: Callable[[Any], Iterable[Any]], records: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    for record in records:
        try:
            key, value = _pair(record, "flat_map_values")
            outs = list(fn(value))
        except Exception:
            skips.record_skipped()
            continue
        for out in outs:
            yield key, out


SKIPPING[map_values_op] = skipping_map_values_op
SKIPPING[flat_map_values_op] = skipping_flat_map_values_op


def keys_op(records: Iterator[Any]) -> Iterator[Any]:
    for record in records:
        yield _pair(record, "keys")[0]


def values_op(records: Iterator[Any]) -> Iterator[Any]:
    for record in records:
        yield _pair(record, "values")[1]


# --- distinct, sum, take -------------------------------------------------------------------------


def as_key_op(records: Iterator[Any]) -> Iterator[tuple[Any, None]]:
    """record -> (record, None): distinct shuffles records as keys, keeping one of each."""
    return ((record, None) for record in records)


def keep_first(first: Any, _second: Any) -> Any:
    return first


def sum_op(records: Iterator[Any]) -> list[Any]:
    return [sum(records)]


def take_op(n: int, records: Iterator[Any]) -> list[Any]:
    return list(itertools.islice(records, n))


# --- sort_by -------------------------------------------------------------------------------------


def sample_keys_op(keyfunc: Callable[[Any], Any], size: int, records: Iterator[Any]) -> list[Any]:
    """At most `size` keys of a partition's records, uniformly chosen (reservoir sampling; the
    seed is fixed, so a partition run again gives the same sample)."""
    rng = random.Random(0)
    sample: list[Any] = []
    for seen, record in enumerate(records):
        key = keyfunc(record)
        if seen < size:
            sample.append(key)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                sample[slot] = key
    return sample


def sort_key_op(keyfunc: Callable[[Any], Any], records: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    """record -> (keyfunc(record), record), for the range shuffle of sort_by (which groups records
    by key, so keys must be hashable)."""
    for record in records:
        key = keyfunc(record)
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"sort_by keys must be hashable, got {type(key).__name__}: {key!r:.200} (a tuple instead of a list?)") from None
        yield key, record


def sorted_groups_op(descending: bool, groups: Iterator[tuple[Any, list[Any]]]) -> Iterator[Any]:
    """(key, [records]) of a range partition -> its records in key order."""
    try:
        ordered = sorted(groups, key=operator.itemgetter(0), reverse=descending)
    except TypeError as exc:
        raise TypeError(f"sort_by keys must compare with each other: {exc}") from None
    for _, records in ordered:
        yield from records


# --- save_as_text_files --------------------------------------------------------------------------


def save_text_op(directory: str, records: Iterator[Any]) -> list[Any]:
    """Write the partition's records, str(record) per line, as its part file; nothing comes back."""
    text_files.write_part(directory, task_partition.current(), map(str, records))
    return []


# --- checkpoint ----------------------------------------------------------------------------------


def checkpoint_op(checkpoint_id: str, records: Iterator[Any]) -> list[Any]:
    """Write the partition's records to the executor's checkpoint store (Dataset.checkpoint); nothing comes back."""
    dataset_checkpoints.write_partition(checkpoint_id, task_partition.current(), records)
    return []


# --- join ----------------------------------------------------------------------------------------


JOINS = ("inner", "left", "right")


def join_op(how: str, records: Iterator[Any]) -> Iterator[Any]:
    """A cogroup's (key, (left values, right values)) -> (key, (a, b)) for every pair; an outer
    side missing its match pairs with None."""
    for key, (left, right) in records:
        if not right:
            if how == "left":
                for a in left:
                    yield key, (a, None)
        elif not left:
            if how == "right":
                for b in right:
                    yield key, (None, b)
        else:
            for a in left:
                for b in right:
                    yield key, (a, b)
