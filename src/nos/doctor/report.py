"""Findings of ``nos doctor`` and their two renderings (text for people, JSON for scripts)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    """Ordered by severity, so the worst finding gives the exit code (0, 1, 2)."""

    OK = 0
    WARNING = 1
    FAILURE = 2

    @property
    def symbol(self) -> str:
        return ("✔", "⚠", "✘")[self]

    @property
    def word(self) -> str:
        return ("ok", "warning", "failure")[self]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    node: str | None = None
    """None for cluster-wide findings."""


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def exit_code(self) -> int:
        return int(max((f.status for f in self.findings), default=Status.OK))

    def counts(self) -> Counter[Status]:
        return Counter(f.status for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "exitCode": self.exit_code,
            "summary": {s.word: counts[s] for s in Status},
            "findings": [
                {"check": f.check, "status": f.status.word, "node": f.node, "message": f.message} for f in self.findings
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        width = max((len(f.check) for f in self.findings), default=0)
        lines: list[str] = []
        groups: dict[str | None, list[Finding]] = {}
        for f in self.findings:
            groups.setdefault(f.node, []).append(f)
        for node, findings in groups.items():
            if lines:
                lines.append("")
            lines.append("cluster" if node is None else f"node {node}")
            lines += [f"  {f.status.symbol} {f.check.ljust(width)}  {f.message}" for f in findings]
        counts = self.counts()
        lines += [
            "",
            f"{counts[Status.OK]} ok, {counts[Status.WARNING]} warning(s), {counts[Status.FAILURE]} failure(s)",
        ]
        return "\n".join(lines)
