"""What an import found: its errors by file, line and column, and its counts per table."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_ERRORS_KEPT = 10_000  # a file of garbage should not fill memory with messages


@dataclass
class RowError:
    file: str
    line: int  # 0: the file as a whole
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, "reason": self.reason}


@dataclass
class ImportReport:
    dry_run: bool = False
    files: list[dict] = field(default_factory=list)
    tables: dict[str, dict] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error_count

    def error(self, file: str, line: int, column: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(RowError(file, line, column, reason))

    def total(self, key: str) -> int:
        return sum(t.get(key, 0) for t in self.tables.values())

    def as_dict(self) -> dict:
        return {
            "rows": self.total("rows"),
            "created": self.total("created"),
            "updated": self.total("updated"),
            "unchanged": self.total("unchanged"),
            "deleted": self.total("deleted"),
            "errors": self.error_count,
            "dry_run": self.dry_run,
            "written": self.ok and not self.dry_run,
            "tables": self.tables,
            "seconds": round(self.seconds, 2),
        }
