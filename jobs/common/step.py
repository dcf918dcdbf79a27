"""What every step returns: the tables it wrote and their row accounting, small enough for XCom."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TableCount:
    table: str
    rows_in: int
    rows_out: int
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class StepResult:
    step: str
    run_date: dt.date
    tables: list[TableCount] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_date"] = self.run_date.isoformat()
        return data

    def summary(self) -> str:
        parts = [f"{t.table}: {t.rows_out} rows" + (f" ({t.quarantined_total} quarantined)" if t.quarantined_total else "")
                 for t in self.tables]
        if not parts:
            parts = [f"{k}={v}" for k, v in self.details.items() if isinstance(v, (str, int, float)) and k != "seconds"]
        return f"{self.step} {self.run_date}: " + "; ".join(parts)
