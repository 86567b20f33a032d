"""Network partitions: rules in one host's namespace that drop everything on its link, both ways.

The rules live in the host's own namespace (an nftables table, or iptables rules where nft is not
installed), so lifting a partition is deleting them, and removing the namespace removes whatever a
failed test left. The host keeps its loopback; only its link to the other hosts is cut.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.multihost.netns import Host, NetworkError

TABLE = "squall_partition"


def firewall_tool() -> str:
    """The partition tool installed: "nft" (preferred), else "iptables", else ""."""
    return next((tool for tool in ("nft", "iptables") if shutil.which(tool)), "")


class Partition:
    """Cuts `host` off while applied. As a context manager: applied on entry, lifted on exit."""

    def __init__(self, host: Host, tool: str) -> None:
        if tool not in ("nft", "iptables"):
            raise ValueError(f"no partition rules with {tool!r}")
        self.host = host
        self.tool = tool

    def apply(self) -> None:
        if self.tool == "nft":
            self._run(["nft", "-f", "-"], stdin=self._nft_table())
        else:
            self._run(["iptables", "-w", "-I", "INPUT", "-i", self.host.interface, "-j", "DROP"])
            self._run(["iptables", "-w", "-I", "OUTPUT", "-o", self.host.interface, "-j", "DROP"])

    def lift(self) -> None:
        """Delete the rules (those that exist: it may follow a half-done apply)."""
        if not self.installed():
            return
        if self.tool == "nft":
            self._run(["nft", "delete", "table", "inet", TABLE])
        else:
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                subprocess.run(self.host.command(["iptables", "-w", "-D", chain, flag, self.host.interface, "-j", "DROP"]),
                               capture_output=True, check=False)

    def installed(self) -> bool:
        """Whether any of the partition's rules are in the host's namespace."""
        if self.tool == "nft":
            return f"table inet {TABLE}" in self._run(["nft", "list", "tables"])
        return "-j DROP" in self._run(["iptables", "-w", "-S"])

    def _nft_table(self) -> str:
        iface = self.host.interface
        return (
            f"table inet {TABLE} {{\n"
            f"    chain input {{ type filter hook input priority 0; iifname \"{iface}\" drop; }}\n"
            f"    chain output {{ type filter hook output priority 0; oifname \"{iface}\" drop; }}\n"
            "}\n"
        )

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        command = self.host.command(argv)
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NetworkError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def __enter__(self) -> Partition:
        try:
            self.apply()
        except BaseException:
            self.lift()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lift()
