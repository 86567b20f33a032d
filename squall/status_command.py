"""`squall status` and `squall top`: a cluster's snapshot, printed once or refreshed live.

Both connect as a driver does (squall.connect: the address, the cluster's keys from SQUALL_CURVE_*),
ask the scheduler for its snapshot (Context.snapshot) and render it with squall.status_view. A
scheduler that does not answer is a squall.ConnectionError, which the command line reports in a
line and exit status 1.
"""

from __future__ import annotations

import json
import time

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from squall import status_view
from squall.common.settings import Settings
from squall.context import Context, connect

# Written to a file or a pipe, the tables get this many columns (a terminal's own width otherwise),
# so that ids and addresses are not cut to fit 80.
PIPE_WIDTH = 200


def status(address: str, timeout: float, as_json: bool, console: Console | None = None) -> int:
    """Print the cluster's snapshot at `address` once: as tables, or the raw JSON."""
    console = console or _console()
    with _connect(address, timeout) as ctx:
        snapshot = ctx.snapshot()
    if as_json:
        console.out(json.dumps(snapshot, indent=2), highlight=False)
    else:
        console.print(status_view.render(snapshot))
    return 0


def top(address: str, timeout: float, interval: float, iterations: int | None, console: Console | None = None) -> int:
    """The snapshot refreshed every `interval` seconds until Ctrl-C, or `iterations` refreshes."""
    if interval <= 0:
        raise ValueError(f"--interval must be a positive number of seconds, got {interval:g}")
    if iterations is not None and iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {iterations}")
    console = console or _console()
    footer = Text(f"refreshing every {interval:g} s; Ctrl-C to quit", style="dim")
    try:
        with _connect(address, timeout) as ctx:
            with Live(console=console, auto_refresh=False) as live:
                shown = 0
                while True:
                    started = time.monotonic()
                    live.update(Group(status_view.render(ctx.snapshot()), footer), refresh=True)
                    shown += 1
                    if iterations is not None and shown >= iterations:
                        break
                    time.sleep(max(0.0, started + interval - time.monotonic()))  # the refresh period itself
    except KeyboardInterrupt:
        pass  # how top is meant to end
    return 0


def _connect(address: str, timeout: float) -> Context:
    settings = Settings.from_env().replace(connect_timeout=timeout)
    return connect(address, settings)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console
