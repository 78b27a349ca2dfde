"""A queryset compiled to SQL once per process, then run again and again with other arguments."""

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from django.db import connections
from django.db.models import QuerySet

# How a placeholder's argument goes into its parameter slot.
_VALUE, _TEXT, _LIKE, _ITEM = "value", "text", "like", "item"


def _as_text(value: Any, db: str) -> str:
    """A value as a backend that passes it as text (SQLite) has it: an aware datetime in UTC
    without its offset, a date in ISO format."""
    ops: Any = connections[db].ops  # PostgreSQL's: compose_sql
    if isinstance(value, dt.datetime):
        return str(ops.adapt_datetimefield_value(value))
    if isinstance(value, dt.date):
        return str(ops.adapt_datefield_value(value))
    return str(value)


_PLACEHOLDER = re.compile(r"%%|%s")


def _inline_fixed(
    sql: str, params: list, slots: dict[int, tuple], db: str
) -> tuple[str, list, dict[int, tuple]]:
    """The SQL with every parameter but the placeholders' written in as a literal (PostgreSQL).
    Their values belong to the query's shape (a tier, a bucket's rank, the at-risk level) and
    never change, and a prepared statement's generic plan cannot see a parameter's value: it
    priced "urgency rank = $1" as a quarter of the partners, where the 7-day bucket is a few
    percent, and the bucket's page took 46 ms of PostgreSQL's CPU instead of 9. The literals are
    the ones client-side binding sends today (psycopg's quoting)."""
    ops: Any = connections[db].ops  # PostgreSQL's: compose_sql
    values = iter(enumerate(params))
    kept: list = []
    kept_slots: dict[int, tuple] = {}

    def replace(match: re.Match) -> str:
        if match.group() == "%%":
            return "%%"
        i, value = next(values)
        if i in slots:
            kept_slots[len(kept)] = slots[i]
            kept.append(value)
            return "%s"
        # Doubled: the statement still goes through the driver's placeholder parsing.
        return ops.compose_sql("%s", [value]).replace("%", "%%")

    sql = _PLACEHOLDER.sub(replace, sql)
    if next(values, None) is not None:
        raise ValueError("more parameters than placeholders in the compiled SQL")
    return sql, kept, kept_slots


def _cursor(db: str) -> Any:
    """A cursor for a compiled statement. On PostgreSQL with a prepare threshold
    (DB_PREPARE_THRESHOLD) it binds its parameters on the server, so psycopg prepares a statement
    run more than that many times on a connection and PostgreSQL stops parsing and planning it
    on every page: Django's own cursors bind on the client, where psycopg never prepares. Only
    these statements are bound on the server, because their SQL is fixed and their results are
    tested both ways; Django's queries keep client-side binding's semantics. (Django's query
    log shows these with $1 placeholders, not their values.)"""
    connection: Any = connections[db]
    if connection.vendor == "postgresql":
        connection.close_if_health_check_failed()
        connection.ensure_connection()
        if connection.connection.prepare_threshold is not None:
            with connection.wrap_database_errors:
                # As connection.cursor() wraps its own: the query log, execute wrappers, errors.
                # psycopg's Cursor binds on the server (Django's own is a ClientCursor).
                return connection._prepare_cursor(psycopg.Cursor(connection.connection))
    return connection.cursor()


def _read(cursor: Any, fetch: str) -> tuple[list, list[str]]:
    """The current result's rows (one for `fetch == "one"`) and its columns' names."""
    rows = [cursor.fetchone()] if fetch == "one" else cursor.fetchall()
    names = [column[0] for column in cursor.description]
    return [row for row in rows if row is not None], names


class CompiledQuery:
    """`build(**placeholders)` is compiled once; `first(**args)`, `rows(**args)` and
    `count(**args)` run its SQL with each placeholder's parameter replaced by the argument of
    the same name, and return rows as dicts (through the fields' converters, as `.values()`
    would).

    Building and compiling a queryset of many subqueries costs the ORM milliseconds on every
    call (the desk strip's seven: 9 ms of CPU on each Live Feed view; the feed's rows and
    count 2-3 ms more, bench/feed_bench.py), though its SQL never changes, only its arguments.
    Each placeholder must be a value that appears nowhere else among the query's parameters
    (a negative id, a date in 1901). Two kinds are more than a value:
    - a string the ORM wrapped into a longer parameter (`name__icontains`: "%placeholder%") is
      a LIKE pattern: the argument is escaped for LIKE as the ORM would and wrapped the same way;
    - a tuple of distinct values (`pk__in`) takes a sequence of at most that many: a shorter one
      is padded by repeating its last item, which changes nothing in an IN list.
    `rows()` and `count()` add LIMIT and OFFSET (as literals, as Django writes them: a prepared
    statement's generic plan cannot see a LIMIT parameter, plans for 10% of the rows and is never
    chosen, so PostgreSQL would plan the statement again on every run), so the build must not
    slice.

    `planner` holds PostgreSQL planner settings for this statement alone (`{"enable_seqscan":
    "off"}`): where the planner's estimate of a filter is known to be wrong for the query's
    purpose. They hold for this statement only, set and set back around it in the same round
    trip (see _execute_planned), so no other statement plans under them."""

    def __init__(
        self, build: Callable[..., QuerySet], *, planner: dict[str, str] | None = None, **placeholders: Any
    ) -> None:
        self.build = build
        self.planner = planner or {}
        self.placeholders = placeholders
        self._compiled: tuple | None = None
        self._db = "default"

    def _slots(self, params: Sequence[Any]) -> dict[int, tuple]:
        slots: dict[int, tuple] = {}
        for i, value in enumerate(params):
            for name, placeholder in self.placeholders.items():
                if isinstance(placeholder, tuple):
                    for k, item in enumerate(placeholder):
                        if type(value) is type(item) and value == item:
                            slots[i] = (name, _ITEM, k)
                elif type(value) is type(placeholder) and value == placeholder:
                    slots[i] = (name, _VALUE)
                elif isinstance(value, str) and value == _as_text(placeholder, self._db):
                    # A backend may pass a value as text (SQLite: dates); the argument goes in the same way.
                    slots[i] = (name, _TEXT)
                elif isinstance(value, str) and isinstance(placeholder, str) and placeholder in value:
                    prefix, suffix = value.split(placeholder, 1)
                    slots[i] = (name, _LIKE, prefix, suffix)
        found = {(slot[0], slot[2] if slot[1] == _ITEM else None) for slot in slots.values()}
        wanted = {
            (name, k if isinstance(p, tuple) else None)
            for name, p in self.placeholders.items()
            for k in (range(len(p)) if isinstance(p, tuple) else [None])
        }
        if found != wanted:
            raise ValueError(f"a placeholder is not among the parameters: {sorted(wanted - found, key=str)}")
        return slots

    def _compile(self) -> tuple:
        qs = self.build(**self.placeholders)
        self._db = qs.db
        compiler = qs.query.get_compiler(using=qs.db)
        sql, params = compiler.as_sql()
        slots = self._slots(params)
        if connections[qs.db].vendor == "postgresql":
            sql, params, slots = _inline_fixed(sql, list(params), slots, qs.db)
        converters = compiler.get_converters([col for col, _sql, _alias in compiler.select])
        return sql, list(params), slots, qs.db, compiler, converters

    def _params(self, args: dict[str, Any]) -> tuple[str, list, str, Any, dict]:
        if self._compiled is None:
            self._compiled = self._compile()
        sql, params, slots, db, compiler, converters = self._compiled
        params = list(params)
        for i, (name, kind, *extra) in slots.items():
            arg = args[name]
            if kind == _VALUE:
                params[i] = arg
            elif kind == _TEXT:
                params[i] = _as_text(arg, db)
            elif kind == _LIKE:
                prefix, suffix = extra
                params[i] = prefix + connections[db].ops.prep_for_like_query(arg) + suffix
            else:
                if not arg:
                    raise ValueError(f"{name}: an empty sequence")
                params[i] = arg[min(extra[0], len(arg) - 1)]
        return sql, params, db, compiler, converters

    def _execute(self, sql: str, params: list, db: str, fetch: str) -> tuple[list, list[str]]:
        if self.planner and connections[db].vendor == "postgresql":
            return self._execute_planned(sql, params, db, fetch)
        return self._fetch(sql, params, db, fetch)

    def _execute_planned(self, sql: str, params: list, db: str, fetch: str) -> tuple[list, list[str]]:
        """The statement between two others in one simple query, one round trip: the first saves
        each setting and sets it for the transaction, the last sets it back. Outside a transaction
        the three are one implicit transaction, so the settings end with it anyway; inside one they
        end with the statement. Client-side binding: a prepared statement is one statement."""
        save = ", ".join(
            f"set_config('churnsite.walk_{name}', current_setting('{name}'), true), set_config('{name}', %s, true)"
            for name in self.planner
        )
        restore = ", ".join(
            f"set_config('{name}', current_setting('churnsite.walk_{name}'), true)" for name in self.planner
        )
        with connections[db].cursor() as cursor:
            cursor.execute(f"SELECT {save}; {sql}; SELECT {restore}", [*self.planner.values(), *params])
            cursor.nextset()
            return _read(cursor, fetch)

    def _fetch(self, sql: str, params: list, db: str, fetch: str) -> tuple[list, list[str]]:
        with _cursor(db) as cursor:
            cursor.execute(sql, params)
            return _read(cursor, fetch)

    def tuples(self, *, limit: int | None = None, offset: int = 0, **args: Any) -> tuple[list, list[str]]:
        """The rows as tuples in the SELECT list's order, and the columns' names."""
        sql, params, db, compiler, converters = self._params(args)
        if limit is not None:
            sql = f"{sql} LIMIT {int(limit)} OFFSET {int(offset)}"
        rows, names = self._execute(sql, params, db, "all")
        if converters:
            rows = list(compiler.apply_converters(rows, converters))
        return rows, names

    def rows(self, *, limit: int | None = None, offset: int = 0, **args: Any) -> list[dict]:
        rows, names = self.tuples(limit=limit, offset=offset, **args)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def first(self, **args: Any) -> dict | None:
        sql, params, db, compiler, converters = self._params(args)
        rows, names = self._execute(sql, params, db, "one")
        if not rows:
            return None
        row = rows[0]
        if converters:
            row = next(iter(compiler.apply_converters([row], converters)))
        return dict(zip(names, row, strict=True))

    def count(self, *, limit: int, **args: Any) -> int:
        """How many rows, counting at most `limit`."""
        sql, params, db, _compiler, _converters = self._params(args)
        rows, _names = self._execute(
            f"SELECT COUNT(*) FROM ({sql} LIMIT {int(limit)}) capped", params, db, "one"
        )
        return rows[0][0]
