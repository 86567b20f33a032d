"""The error classes users catch."""

from __future__ import annotations

import builtins
import pickle

from squall.common.serialization import SerializationError

import squall


def test_serialization_error_is_a_squall_error_exported_from_squall() -> None:
    assert squall.SerializationError is SerializationError
    assert issubclass(squall.SerializationError, squall.SquallError)
    assert issubclass(squall.SerializationError, ValueError)  # as before


def test_connection_error_is_also_the_builtin_connection_error() -> None:
    err = squall.SchedulerRestartedError("the scheduler restarted")
    assert isinstance(err, builtins.ConnectionError) and isinstance(err, squall.SquallError)
    assert str(err) == "the scheduler restarted"
    assert str(pickle.loads(pickle.dumps(err))) == "the scheduler restarted"
