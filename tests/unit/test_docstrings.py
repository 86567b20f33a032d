"""Every public class, function and method of the user API says what it does."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import squall
from squall import broadcast, connection, context, dataset, local, sinks, sources, stream, windows

USER_MODULES = [connection, context, dataset, stream, local, sources, sinks, windows, broadcast]


def public_members(module: ModuleType) -> list[tuple[str, str | None]]:
    """(qualified name, docstring) of the public classes and functions defined in `module`, and
    of the public methods and properties those classes define."""
    found: list[tuple[str, str | None]] = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            found.append((name, obj.__doc__))
        elif inspect.isclass(obj):
            found.append((name, own_class_doc(obj)))
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    # inspect.getdoc: an override may keep the docstring of the method it overrides
                    found.append((f"{name}.{attr}", inspect.getdoc(getattr(obj, attr)) or member.__doc__))
    return found


def own_class_doc(cls: type) -> str | None:
    doc = cls.__dict__.get("__doc__")  # its own, not a base class's
    if doc and doc.startswith(f"{cls.__name__}("):
        return None  # the signature a dataclass writes when it has no docstring
    return doc


@pytest.mark.parametrize("module", USER_MODULES, ids=lambda m: m.__name__)
def test_every_public_class_and_method_has_a_docstring(module: ModuleType) -> None:
    missing = [name for name, doc in public_members(module) if not (doc and doc.strip())]
    assert not missing, f"{module.__name__}: no docstring on {', '.join(missing)}"


def test_the_package_entry_points_have_docstrings() -> None:
    for name in squall.__all__:
        obj = getattr(squall, name)
        doc = own_class_doc(obj) if isinstance(obj, type) else obj.__doc__
        assert doc and doc.strip(), name
