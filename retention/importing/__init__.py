"""Import a team's own history: partners, monthly activity, invoices, churn events.

The contract (columns, types, what a missing month means) is docs/data.md. One import is
one transaction (``history``): every file is read in chunks (``reading``), checked cell by
cell (``validation``, vectorised over a chunk), and its good rows are loaded into a
temporary staging table (``staging``: PostgreSQL ``COPY``; on SQLite plain inserts, the same
tables and SQL otherwise). Checks that need more than one row (duplicate keys, unknown
partner ids, churn before joining) then run as SQL on the staging tables (``checks``). Any
problem anywhere and nothing is written; otherwise set-based upserts on the natural keys
(``upserts``) write only rows that differ, so re-importing the same files changes nothing.
The Import page runs an import as a job (``jobs``); ``report`` is what every caller gets back.
"""

from retention.importing.contract import OPTIONAL, REQUIRED, TABLES
from retention.importing.history import history_end, history_import, partners_import_csv
from retention.importing.jobs import import_job_create, import_job_progress, import_job_run
from retention.importing.reading import collect_files
from retention.importing.report import ImportReport, RowError

__all__ = [
    "OPTIONAL",
    "REQUIRED",
    "TABLES",
    "ImportReport",
    "RowError",
    "collect_files",
    "history_end",
    "history_import",
    "import_job_create",
    "import_job_progress",
    "import_job_run",
    "partners_import_csv",
]
