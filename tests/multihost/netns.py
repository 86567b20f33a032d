"""Hosts for multi-host tests: Linux network namespaces on one bridge, always removed afterwards.

A Network is a bridge in the root namespace, with an address so that the test process (the
driver) reaches every host, and one namespace per host joined to the bridge by a veth pair: the
outer end is a port of the bridge, the inner end is the host's `eth0`. Its /24 is one of
10.231.0.0/16 that nothing on this machine uses yet; hosts have no route beyond it.

Every name starts with PREFIX and the creating process's id in base 36 ("sqm5bx3-ex0"), so that a
run's leftovers are recognisable: those of a process that is gone (a run that crashed or was
killed) are removed before a network is made. One process builds one network at a time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "sqm"
IFNAME_MAX = 15  # Linux's limit on interface names (IFNAMSIZ - 1)
SUBNETS = "10.231.{}.0/24"  # the /16 the test networks' /24s come from
_OWNER = re.compile(rf"^{PREFIX}([0-9a-z]+)-")


class NetworkError(RuntimeError):
    """An `ip` command failed."""


@dataclass(frozen=True)
class Host:
    name: str  # "ex0"
    namespace: str  # "sqm5bx3-ex0", also the name of the veth pair's outer end
    address: str  # its IPv4 address on the bridge
    interface: str = "eth0"  # the veth pair's inner end

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` execs it: same process)."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Network:
    """A bridge and one namespace per host name. Use as a context manager: close() removes all."""

    def __init__(self, host_names: Sequence[str]) -> None:
        self.tag = run_tag()
        remove_leftovers()
        self.subnet = free_subnet()
        self.bridge = _ifname(self.tag, "br")
        self.gateway = str(self.subnet[1])
        self.hosts: dict[str, Host] = {}
        self._undo: list[list[str]] = []  # what close() runs, last first
        self._sigterm: Any = None  # the SIGTERM handler to restore on exit
        try:
            self._build(host_names)
        except BaseException:
            self.close()
            raise

    def _build(self, host_names: Sequence[str]) -> None:
        self._create(["ip", "link", "add", self.bridge, "type", "bridge"], ["ip", "link", "del", self.bridge])
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, name in enumerate(host_names):
            host = Host(name, _ifname(self.tag, name), str(self.subnet[2 + i]))
            self._create(["ip", "netns", "add", host.namespace], ["ip", "netns", "del", host.namespace])
            self._create(
                ["ip", "link", "add", host.namespace, "type", "veth", "peer", "name", host.interface, "netns", host.namespace],
                ["ip", "link", "del", host.namespace],
            )
            ip("link", "set", host.namespace, "master", self.bridge, "up")
            ip("-n", host.namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", host.interface)
            ip("-n", host.namespace, "link", "set", host.interface, "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
            self.hosts[name] = host

    def _create(self, command: list[str], undo: list[str]) -> None:
        _run(command)
        self._undo.append(undo)

    def close(self) -> None:
        """Remove everything created, last first; go on past failures (a half-built network)."""
        while self._undo:
            subprocess.run(self._undo.pop(), capture_output=True, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network that still exist (empty once closed)."""
        return [name for name in namespaces() + links() if name.startswith(self.tag + "-")]

    def __enter__(self) -> Network:
        # A SIGTERM (a CI job's timeout) would end the process without any clean-up: make it an
        # interrupt, which unwinds the with-blocks (as Ctrl-C does) and so removes the network.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._sigterm = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)
                self._sigterm = None


def run_tag(pid: int | None = None) -> str:
    """The name prefix of the networks `pid` (default: this process) builds."""
    return PREFIX + _base36(os.getpid() if pid is None else pid)


def unavailable() -> str:
    """Why networks cannot be built here, or "" if they can (it builds and removes a probe)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = _ifname(run_tag(), "probe")
    try:
        _run(["ip", "netns", "add", probe])
        try:
            _run(["ip", "link", "add", probe, "type", "veth", "peer", "name", "eth0", "netns", probe])
            _run(["ip", "link", "add", probe + "b", "type", "bridge"])
            _run(["ip", "link", "del", probe + "b"])
        finally:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    except NetworkError as exc:
        return f"cannot build network namespaces with veth pairs and a bridge: {exc}"
    return ""


def remove_leftovers() -> list[str]:
    """Remove the namespaces and links of runs whose process is gone, or of this process (a
    network of ours that was not closed). Returns the names removed."""
    removed = []
    for name in namespaces():
        if _stale(name):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    for name in links():  # the bridge, and veth pairs whose namespace is still being torn down
        if _stale(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
            removed.append(f"link {name}")
    return removed


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.231.0.0/16 that overlaps no address or route of the root namespace."""
    used = []
    for route in _json("-4", "route", "show"):
        if route.get("dst", "default") != "default":
            used.append(ipaddress.ip_network(route["dst"], strict=False))
    for link in _json("-4", "addr", "show"):
        for a in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    start = os.getpid() % 256  # concurrent runs try different ones first
    for i in range(256):
        candidate = ipaddress.ip_network(SUBNETS.format((start + i) % 256))
        if not any(candidate.overlaps(u) for u in used):
            return candidate  # type: ignore[return-value]
    raise NetworkError("every /24 of 10.231.0.0/16 is in use on this machine")


def namespaces() -> list[str]:
    return [ns["name"] for ns in _json("netns", "list")]


def links() -> list[str]:
    return [link["ifname"] for link in _json("link", "show")]


def ip(*args: str) -> str:
    return _run(["ip", *args])


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _json(*args: str) -> list[dict]:
    out = ip("-j", *args).strip()
    return json.loads(out) if out else []


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stale(name: str) -> bool:
    owner = _OWNER.match(name)
    if owner is None:
        return False
    pid = int(owner[1], 36)
    return pid == os.getpid() or not os.path.exists(f"/proc/{pid}")


def _ifname(tag: str, name: str) -> str:
    full = f"{tag}-{name}"
    if len(full) > IFNAME_MAX:
        raise ValueError(f"interface name {full!r} is longer than {IFNAME_MAX} characters")
    return full


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if n == 0:
            return out
