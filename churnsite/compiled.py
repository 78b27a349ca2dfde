"""A queryset compiled to SQL once per process, then run again and again with other arguments."""

from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.models import QuerySet


class CompiledQuery:
    """`build(**placeholders)` is compiled once; `first(**args)` runs its SQL with each
    placeholder's parameter replaced by the argument of the same name, and returns the first
    row as a dict (through the fields' converters, as `.values()` would), or None.

    Building and compiling a queryset of many subqueries costs the ORM milliseconds on every
    call (the desk strip's seven: 9 ms of CPU on each Live Feed view, bench/feed_bench.py),
    though its SQL never changes, only its arguments. Each placeholder must be a value that
    appears nowhere else among the query's parameters (a negative id, a date in 1901)."""

    def __init__(self, build: Callable[..., QuerySet], **placeholders: Any) -> None:
        self.build = build
        self.placeholders = placeholders
        self._compiled: tuple | None = None

    def _compile(self) -> tuple:
        qs = self.build(**self.placeholders)
        compiler = qs.query.get_compiler(using=qs.db)
        sql, params = compiler.as_sql()
        # A backend may pass a value as text (SQLite: dates); the argument goes in the same way.
        slots = {
            i: (name, isinstance(value, str) and not isinstance(placeholder, str))
            for i, value in enumerate(params)
            for name, placeholder in self.placeholders.items()
            if (type(value) is type(placeholder) and value == placeholder)
            or (isinstance(value, str) and value == str(placeholder))
        }
        if {name for name, _text in slots.values()} != set(self.placeholders):
            raise ValueError(f"a placeholder is not among the parameters of {sql}")
        converters = compiler.get_converters([col for col, _sql, _alias in compiler.select])
        return sql, list(params), slots, qs.db, compiler, converters

    def first(self, **args: Any) -> dict | None:
        if self._compiled is None:
            self._compiled = self._compile()
        sql, params, slots, db, compiler, converters = self._compiled
        params = list(params)
        for i, (name, as_text) in slots.items():
            params[i] = str(args[name]) if as_text else args[name]
        with connections[db].cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
            names = [column.name for column in cursor.description]
        if row is None:
            return None
        if converters:
            row = next(iter(compiler.apply_converters([row], converters)))
        return dict(zip(names, row, strict=True))
