"""Every event is in the chain (NOT NULL, one event per position), and no session setting can
lift the append-only trigger any more (issue 9: `SET LOCAL churnsite.allow_audit_truncate`
let the app empty the trail).

On PostgreSQL the triggers refuse UPDATE and DELETE of events for everyone, and TRUNCATE for
every role but the tables' owner (or a superuser): the roles that could drop the trigger anyway,
that run migrations, `seed_demo --reset` and test flushes. The site runs as another role
(README), and the chain exposes whatever an owner or superuser changes (`audit_verify`). The
chain head moves only forward, one event at a time, onto an event that exists. SQLite (the
embedded demo) relies on the model and queryset guards and the chain.
"""

from django.db import migrations, models

OWNER_ONLY_TRUNCATE = """
    IF TG_OP = 'TRUNCATE'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RETURN NULL;
    END IF;
"""

CREATE = f"""
CREATE OR REPLACE FUNCTION agent_audit_append_only() RETURNS trigger AS $$
BEGIN
{OWNER_ONLY_TRUNCATE}
    RAISE EXCEPTION 'agent_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION agent_audit_head_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.seq = OLD.seq + 1 AND NEW.id = OLD.id
           AND NEW.hash = (SELECT hash FROM agent_auditevent WHERE seq = NEW.seq) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'agent_auditchainhead only advances to the next event'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
{OWNER_ONLY_TRUNCATE}
    RAISE EXCEPTION 'agent_auditchainhead: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS agent_auditchainhead_forward_only ON agent_auditchainhead;
CREATE TRIGGER agent_auditchainhead_forward_only
    BEFORE UPDATE OR DELETE ON agent_auditchainhead
    FOR EACH ROW EXECUTE FUNCTION agent_audit_head_forward_only();
DROP TRIGGER IF EXISTS agent_auditchainhead_no_truncate ON agent_auditchainhead;
CREATE TRIGGER agent_auditchainhead_no_truncate
    BEFORE TRUNCATE ON agent_auditchainhead
    FOR EACH STATEMENT EXECUTE FUNCTION agent_audit_head_forward_only();
"""

DROP = """
DROP TRIGGER IF EXISTS agent_auditchainhead_no_truncate ON agent_auditchainhead;
DROP TRIGGER IF EXISTS agent_auditchainhead_forward_only ON agent_auditchainhead;
DROP FUNCTION IF EXISTS agent_audit_head_forward_only();
"""


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("agent", "0006_audit_hash_chain"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="seq",
            field=models.PositiveBigIntegerField(editable=False, unique=True, verbose_name="chain position"),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
