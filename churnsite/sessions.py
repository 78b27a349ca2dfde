"""Django's database sessions, read through SQL compiled once per process."""

import datetime as dt

from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.db.models import QuerySet
from django.utils import timezone

from churnsite.compiled import CompiledQuery


def _session_query(*, session_key: str, now: dt.datetime) -> QuerySet:
    return Session.objects.filter(session_key=session_key, expire_date__gt=now).values("session_data")


# Every signed-in page reads its session: through the ORM the lookup, its compiling and a model
# instance cost ~1 ms of CPU a request (bench/feed_bench.py).
_SESSION = CompiledQuery(
    _session_query, session_key="zqxj-no-such-session", now=dt.datetime(1901, 1, 1, tzinfo=dt.UTC)
)


class SessionStore(db.SessionStore):
    """The database backend (sessions stay in the database: see settings), loading a session in
    one precompiled statement; saving, expiry and clearing are Django's."""

    def load(self) -> dict:
        key = self.session_key  # None when the cookie's key is malformed
        row = _SESSION.first(session_key=key, now=timezone.now()) if key else None
        if row is None:
            self._session_key = None
            return {}
        return self.decode(row["session_data"])
