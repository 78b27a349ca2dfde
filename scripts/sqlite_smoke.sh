#!/usr/bin/env bash
# The embedded path `make demo` uses: SQLite, no broker. Seed a small world end to end.
set -euo pipefail
PY=${1:-.venv/bin/python}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export DATABASE_URL="sqlite:///$dir/smoke.sqlite3" MEDIA_ROOT="$dir/media" REDIS_URL=""
# DEBUG is off here: the settings need a key (a throwaway one; nothing is served).
export SECRET_KEY=${SECRET_KEY:-django-insecure-smoke-test-only}
echo "SQLite smoke test in $dir"
$PY manage.py migrate --noinput -v 0
out=$($PY manage.py seed_demo --partners 300 --months 12 --seed 7 --no-progress)
summary=$(echo "$out" | tail -1)
echo "seed_demo: $summary"
$PY - "$summary" <<'PYEOF'
import json, sys
s = json.loads(sys.argv[1])
assert s["partners"] == 300, s
print("sqlite smoke: ok")
PYEOF
