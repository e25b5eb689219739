"""The per-scenario summary table printed at the end of the fault suite."""

from __future__ import annotations

from dataclasses import dataclass

HEADER = (
    "scenario",
    "sent",
    "completed",
    "failed",
    "lost",
    "duplicated",
    "recover_s",
    "redelivered",
    "result",
)


@dataclass
class Row:
    """One scenario's figures; `problems` lists every invariant it broke."""

    scenario: str
    sent: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: float | None = None
    #: Events delivered again and dropped by an inbox: proof the fault hit mid-hop.
    redelivered: int = 0
    problems: int = 0

    def cells(self) -> tuple[str, ...]:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}"
        result = "ok" if self.problems == 0 else f"{self.problems} problem(s)"
        return (
            self.scenario,
            str(self.sent),
            str(self.completed),
            str(self.failed),
            str(self.lost),
            str(self.duplicated),
            recover,
            str(self.redelivered),
            result,
        )


#: Filled by the scenarios as they finish, printed by the conftest's terminal summary.
RESULTS: list[Row] = []


def format_table(rows: list[Row]) -> list[str]:
    """The rows as an aligned text table (a header line, a rule, one line per row)."""
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]

    def fmt(line: tuple[str, ...]) -> str:
        first = line[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(line[1:-1], widths[1:-1], strict=True)]
        return "  ".join([first, *rest, line[-1]])

    return [fmt(HEADER), "-" * len(fmt(HEADER)), *(fmt(r.cells()) for r in rows)]
