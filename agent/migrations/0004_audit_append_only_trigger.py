"""On PostgreSQL the database itself refuses UPDATE, DELETE and TRUNCATE on the audit trail,
so not even raw SQL or a bug in another app can rewrite history. SQLite (the embedded demo)
relies on the model and queryset guards only.

TRUNCATE is allowed only when the session setting churnsite.allow_audit_truncate is 'on'
(test databases set it so pytest's flush can empty tables between tests)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION agent_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('churnsite.allow_audit_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'agent_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS agent_auditevent_no_update_delete ON agent_auditevent;
CREATE TRIGGER agent_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON agent_auditevent
    FOR EACH ROW EXECUTE FUNCTION agent_audit_append_only();
DROP TRIGGER IF EXISTS agent_auditevent_no_truncate ON agent_auditevent;
CREATE TRIGGER agent_auditevent_no_truncate
    BEFORE TRUNCATE ON agent_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION agent_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS agent_auditevent_no_truncate ON agent_auditevent;
DROP TRIGGER IF EXISTS agent_auditevent_no_update_delete ON agent_auditevent;
DROP FUNCTION IF EXISTS agent_audit_append_only();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("agent", "0003_config_dnc_claims_followups")]

    operations = [migrations.RunPython(create_trigger, drop_trigger)]
