"""Broadcast handles: a function captures the name, never the value."""

from __future__ import annotations

import cloudpickle
import pytest
from squall.common import broadcast_store
from squall.common.plan import code_key
from squall.common.serialization import dumps_function

from squall.broadcast import Broadcast


def test_a_pickled_handle_carries_only_the_key_and_resolves_from_the_store():
    big = list(range(50_000))
    blob = dumps_function(big)
    handle = Broadcast(code_key(blob), big, local=True)
    shipped = cloudpickle.dumps(lambda x: handle.value[x])
    assert len(shipped) < 2_000  # the 50k-element list is not in the function
    broadcast_store.install({code_key(blob): blob})
    fn = cloudpickle.loads(shipped)
    assert fn(49_999) == 49_999
    assert handle.value is big  # on the driver, the value itself


def test_a_value_that_never_arrived_is_a_clear_error():
    broadcast_store.install({})
    with pytest.raises(LookupError, match="never sent"):
        _ = cloudpickle.loads(cloudpickle.dumps(Broadcast("nope", local=True))).value
