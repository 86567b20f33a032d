"""docs/settings.md lists every setting, once, with the default the code has."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from squall import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| `(?P<default>[^`]*)` \|")


def documented() -> list[tuple[str, str]]:
    return [(m["name"], m["default"]) for m in map(ROW.match, DOC.read_text().splitlines()) if m]


def shown(value: object) -> str:
    """A default as the doc shows it: what one would write in the environment variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def test_every_setting_is_documented_once_with_its_default() -> None:
    rows = documented()
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"documented twice: {sorted({n for n in names if names.count(n) > 1})}"
    code = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
    assert set(names) == set(code), f"missing from the doc: {sorted(set(code) - set(names))}; not settings: {sorted(set(names) - set(code))}"
    wrong = {name: (default, shown(code[name])) for name, default in rows if default != shown(code[name])}
    assert not wrong, f"defaults that differ from the code (doc, code): {wrong}"
