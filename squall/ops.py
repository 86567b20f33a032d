"""Per-partition adapters for Dataset operations. They are referenced by name from pickled plans,
so executors import this module; keep their signatures stable."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from squall.common import skips


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


def flat_map_values_op(fn: Callable[[Any], Iterable[Any]], records: Iterator[Any]) -> Iterator[Any]:
    for key, value in records:
        for out in fn(value):
            yield key, out


def skipping_flat_map_values_op(fn: Callable[[Any], Iterable[Any]], records: Iterator[Any]) -> Iterator[Any]:
    for key, value in records:
        try:
            outs = list(fn(value))
        except Exception:
            skips.record_skipped()
            continue
        for out in outs:
            yield key, out


SKIPPING = {map_op: skipping_map_op, flat_map_op: skipping_flat_map_op, filter_op: skipping_filter_op,
            flat_map_values_op: skipping_flat_map_values_op}


def count_op(records: Iterator[Any]) -> list[int]:
    return [sum(1 for _ in records)]


_EMPTY = object()


def reduce_op(fn: Callable[[Any, Any], Any], records: Iterator[Any]) -> list[Any]:
    """A partition's partial reduction, or nothing for an empty partition."""
    first = next(records, _EMPTY)
    if first is _EMPTY:
        return []
    return [functools.reduce(fn, records, first)]


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
