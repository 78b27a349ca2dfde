#!/usr/bin/env bash
# `make demo`: migrate, seed a demo world, train, score, then serve the site with a
# Celery worker and beat (Redis when reachable, otherwise tasks run in-process).
set -euo pipefail
PY=${1:-.venv/bin/python}
PORT=${2:-8000}
PARTNERS=${3:-3000}
BIN=$(dirname "$PY")

if [ -z "${REDIS_URL:-}" ] && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  export REDIS_URL=redis://127.0.0.1:6379/1
fi
export DEBUG=${DEBUG:-true}

$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0
seeded=$($PY manage.py shell -c "from retention.models import Partner; print(Partner.objects.exists())" 2>/dev/null | tail -1)
if [ "$seeded" = "True" ]; then
  echo "Demo data already present (make clean, or seed_demo --reset, to start over)."
else
  $PY manage.py seed_demo --partners "$PARTNERS" --seed 42
fi
if $PY manage.py help train_churn_model >/dev/null 2>&1; then
  $PY manage.py train_churn_model | tail -1
  if [ "$seeded" != "True" ]; then
    # Six month-ends of history, so partner pages open with risk over time.
    for back in 6 5 4 3 2 1; do
      as_of=$(date -u -d "$(date -u +%Y-%m-01) -$((back - 1)) month -1 day" +%F)
      $PY manage.py score_partners --as-of "$as_of" | tail -1
    done
  fi
  $PY manage.py score_partners | tail -1
fi
if $PY manage.py help setup_periodic_tasks >/dev/null 2>&1; then
  $PY manage.py setup_periodic_tasks | tail -1
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
if [ -n "${REDIS_URL:-}" ]; then
  "$BIN/celery" -A churnsite worker -l warning -c 2 -Q churnsite &
  pids+=($!)
  "$BIN/celery" -A churnsite beat -l warning &
  pids+=($!)
  echo "Celery worker and beat running on $REDIS_URL"
else
  echo "No Redis reachable: the agent and scoring run in-process when triggered from the site."
fi
cat <<MSG

  churnsite demo is at  http://127.0.0.1:$PORT/
  Retention team login: retention / retention-demo
  Manager login:        manager / manager-demo   (also the admin review queue)

MSG
"$BIN/gunicorn" churnsite.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --access-logfile - &
pids+=($!)
wait
