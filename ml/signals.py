from django.dispatch import Signal

# Sent inside scoring_run_finish's transaction when a current (not backfill) run succeeds,
# with `run`: other apps react (the desk queues chat alerts) without ml importing them.
scoring_run_succeeded = Signal()
