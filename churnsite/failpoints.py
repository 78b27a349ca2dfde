"""Named pauses and failures at exact steps of the agent, the outbox and scoring, for the fault tests.

The fault tests kill -9 a real worker at a chosen step (drafting, between the commit and the
send, during the send). `CHURNSITE_FAILPOINTS="outbox.sending=30"` makes every process that reaches
`failpoint("outbox.sending")` write a marker file into CHURNSITE_FAILPOINT_DIR (so the test knows
the worker is there) and sleep 30 s. `CHURNSITE_FAILPOINTS="ml.score_chunk=raise"` makes the
step raise FailpointError once per arming: when the test has created `<name>.arm` in
CHURNSITE_FAILPOINT_DIR, the first process to remove it raises, every other one (and every later
call) passes, so one chunk of a chord fails and a retry runs clean on the same workers.
Unset (production), a failpoint is one environment lookup.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path


class FailpointError(RuntimeError):
    pass


def failpoint(name: str) -> None:
    spec = os.environ.get("CHURNSITE_FAILPOINTS", "")
    if not spec:
        return
    pauses = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if name not in pauses:
        return
    folder = os.environ.get("CHURNSITE_FAILPOINT_DIR")
    if pauses[name] == "raise":
        try:
            # unlink is atomic: of the processes that reach here together, one wins.
            Path(folder or ".", f"{name}.arm").unlink()
        except FileNotFoundError:
            return
        raise FailpointError(f"failpoint {name} fired")
    if folder:
        Path(folder, f"{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}").touch()
    time.sleep(float(pauses[name]))
