"""Network faults of the lab: partitions and packet loss, with nftables in each node.

A part of :class:`lab.core.Lab` (a mixin over its state): tables ``ma_partition``
and ``ma_loss`` in a node's own namespace, so a fault never touches the host's
rules and ``heal``/``loss 0`` remove exactly what was added.
"""

from __future__ import annotations

from collections.abc import Sequence

from .procs import LabError, sh


class LabFaults:
    """``partition``, ``heal`` and ``loss`` for the lab's nodes."""

    def _nft(self, node: str, script: str) -> None:
        sh(["ip", "netns", "exec", self._node(node)["netns"], "nft", "-f", "-"], input=script)

    def partition(self, *groups: Sequence[str]) -> None:
        """Cut the lab into groups that cannot reach each other (the controller reaches all)."""
        groups = [list(g) for g in groups if g]
        named = [n for g in groups for n in g]
        for n in named:
            self._node(n)
        if len(set(named)) != len(named):
            raise LabError("a node appears in two partition groups")
        rest = [n for n in self.nodes if n not in named]
        if rest:
            groups.append(rest)
        self.heal()
        for group in groups:
            others = [self.nodes[n] for g in groups if g is not group for n in g]
            if not others:
                continue
            addrs = ", ".join(others)
            for n in group:
                self._nft(
                    n,
                    "table inet ma_partition {\n"
                    f"  chain input {{ type filter hook input priority 0; ip saddr {{ {addrs} }} drop; }}\n"
                    f"  chain output {{ type filter hook output priority 0; ip daddr {{ {addrs} }} drop; }}\n"
                    "}\n",
                )
        self.state["partition"] = groups
        self._write_state()

    def heal(self) -> None:
        """Undo any partition."""
        for n in self.nodes:
            self._nft_delete(n, "ma_partition")
        self.state.pop("partition", None)
        self._write_state()

    def loss(self, node: str, percent: float) -> None:
        """Drop ``percent`` % of the node's packets at random (0 clears)."""
        if not 0 <= percent <= 100:
            raise LabError(f"loss must be 0-100 %, got {percent}")
        self._nft_delete(node, "ma_loss")
        if percent > 0:
            pct = round(percent)
            # numgen's range is 0-99: "< 100" is invalid, and 100 % means drop all.
            rule = "drop" if pct >= 100 else f"numgen random mod 100 < {pct} drop"
            self._nft(
                node,
                "table inet ma_loss {\n"
                f"  chain input {{ type filter hook input priority -10; ip saddr != 127.0.0.0/8 {rule}; }}\n"
                f"  chain output {{ type filter hook output priority -10; ip daddr != 127.0.0.0/8 {rule}; }}\n"
                "}\n",
            )
        self._node(node)["loss"] = percent
        self._write_state()

    def _nft_delete(self, node: str, table: str) -> None:
        sh(
            [
                "ip",
                "netns",
                "exec",
                self._node(node)["netns"],
                "nft",
                "delete",
                "table",
                "inet",
                table,
            ],
            check=False,
        )
