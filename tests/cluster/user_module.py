"""A user's own importable module: executors import it (its functions are pickled by name)."""


def reject_thirteen(x):  # type: ignore[no-untyped-def]
    if x == 13:
        raise ValueError(f"module function got {x}")
    return x
