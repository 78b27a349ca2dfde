"""`manage.py check --deploy`: the audit trail is append-only against the site's own database
role only if that role can neither lift the trigger (the table's owner can) nor bypass it (a
superuser can). Run the site as another role, migrations as the owner (README). Registered
by AgentConfig.ready()."""

from django.core import checks
from django.db import DatabaseError, connection

AUDIT_TABLE = "agent_auditevent"


def audit_role_problems() -> list[str]:
    """What the current database role could do to the audit trail that it should not."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT current_user, r.rolsuper, owner.rolname,
                   pg_has_role(current_user, c.relowner, 'MEMBER') AND NOT r.rolsuper
            FROM pg_roles r, pg_class c JOIN pg_roles owner ON owner.oid = c.relowner
            WHERE r.rolname = current_user AND c.oid = to_regclass(%s)
            """,
            [AUDIT_TABLE],
        )
        row = cursor.fetchone()
    if row is None:  # not migrated yet
        return []
    user, superuser, owner, owns = row
    problems = []
    if superuser:
        problems.append(f"the database user {user!r} is a superuser (it can disable any trigger)")
    if owns:
        problems.append(
            f"the database user {user!r} owns {AUDIT_TABLE} (or is a member of its owner {owner!r}) "
            "and can disable its append-only trigger"
        )
    return problems


def check_audit_trail_role(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    try:
        problems = audit_role_problems()
    except DatabaseError:  # no database to ask (yet): the other checks and migrate will say so
        return []
    return [
        checks.Warning(
            f"The audit trail is not tamper-proof against this site: {problem}.",
            hint="Run the site as a role that does not own the tables and is not a superuser; run "
            "migrations as the owner (README: 'Database roles').",
            id="agent.W001",
        )
        for problem in problems
    ]
