"""Squall's lines in the user's process go to stderr (stdout is the user's output), unless the
program configured structlog itself: then they follow its configuration."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog

from squall.driver_log import driver_log


@pytest.fixture()
def unconfigured() -> Iterator[None]:
    saved, was = structlog.get_config(), structlog.is_configured()
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    if was:
        structlog.configure(**saved)


@pytest.mark.usefixtures("unconfigured")
def test_an_unconfigured_program_gets_squalls_lines_on_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    driver_log("stream").info("group_size_changed", old=1, new=2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "group_size_changed" in err and "component=stream" in err and "new=2" in err


@pytest.mark.usefixtures("unconfigured")
def test_a_program_that_configured_structlog_gets_squalls_lines_where_it_said(capsys: pytest.CaptureFixture[str]) -> None:
    log = driver_log("runs")  # made before the program configures structlog: the choice is made per call
    mine = io.StringIO()
    structlog.configure(processors=[structlog.processors.JSONRenderer()], logger_factory=structlog.PrintLoggerFactory(file=mine))
    log.warning("run_failed", job=3)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert '"event": "run_failed"' in mine.getvalue() and '"component": "runs"' in mine.getvalue()
