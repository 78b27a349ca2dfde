"""Sending Celery tasks from web requests without depending on the broker being up.

The row a task works on (an agent run, an outbox row) is committed in the database first; the
task message only says "start now". When Redis is down the message cannot be sent: the page
must still answer, the failure is audited, and the row stays queued in the database for the
reaper to send again once the broker is back (nothing depends on a message surviving in Redis).
"""

import logging

from celery import Task
from django.db import transaction
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from agent.audit import audit_record

logger = logging.getLogger(__name__)


def enqueue(task: Task, *args, run=None) -> bool:
    """Send `task(*args)` once the current transaction commits (at once outside one).

    Returns False, logged and audited, when the broker is unreachable; True when sent or when
    the send waits for an enclosing transaction's commit."""
    outcome = {"sent": True}

    def send() -> None:
        try:
            # retry=False: fail in milliseconds instead of holding the request through kombu's
            # publish retries. ignore_result: the web never waits for a result, and subscribing
            # to the result backend leaves a pub/sub connection that, once Redis dies, retries
            # for 20 s per call and then gives up for the life of the process.
            task.apply_async(args=args, retry=False, ignore_result=True)
        except (OperationalError, RedisError, OSError) as exc:
            outcome["sent"] = False
            error = f"{type(exc).__name__}: {exc}"[:300]
            logger.warning("Could not send %s%r: %s", task.name, args, error)
            audit_record(
                event_type="task_enqueue_failed",
                actor_type="system",
                run=run,
                payload={"task": task.name, "args": list(args), "error": error},
            )

    transaction.on_commit(send)
    return outcome["sent"]
