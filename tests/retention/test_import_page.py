"""The Import page: managers upload history files, follow the job, and read every bad row."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from retention.models import ImportJob, MonthlyActivity, Partner
from retention.tasks import run_import_job
from tests.conftest import htmx

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


def upload(name: str, content: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content if content is not None else (SAMPLES / name).read_bytes())


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_a_manager_uploads_the_history_and_sees_what_was_imported(manager_client, media):
    files = [upload(n) for n in ("partners.csv", "activity.csv", "invoices.csv", "churn_events.csv")]
    response = manager_client.post(reverse("retention:import"), {"files": files})
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"?job={job.pk}")
    page = manager_client.get(response["Location"]).content.decode()
    assert 'id="import-progress"' in page and 'hx-trigger="every 1s"' in page  # queued: the bar polls

    run_import_job(job.pk)  # what the worker does with the queued job
    partial = manager_client.get(response["Location"], headers=htmx("import-job")).content.decode()
    assert "<html" not in partial and "every 1s" not in partial  # done: the polling stops
    assert "Imported 17 rows: 16 new, 1 updated, 0 unchanged." in partial
    assert Partner.objects.count() == 3 and MonthlyActivity.objects.count() == 8


def test_bad_rows_are_listed_with_file_line_and_column_and_nothing_is_written(manager_client, media):
    activity = (SAMPLES / "activity.csv").read_bytes() + b"P10001,2024-13,5,5.00,1,0\n"
    files = [upload("partners.csv"), upload("my activity.csv", activity)]
    manager_client.post(reverse("retention:import"), {"files": files})
    job = ImportJob.objects.get()
    run_import_job(job.pk)
    page = manager_client.get(f"{reverse('retention:import')}?job={job.pk}").content.decode()
    assert "Nothing was written: 1 problem." in page
    assert '<td>my activity.csv</td><td class="num">10</td><td>month</td>' in page
    assert not Partner.objects.exists()


def test_the_retention_team_cannot_open_the_import_page(retention_client, media):
    assert retention_client.get(reverse("retention:import")).status_code == 403
    response = retention_client.post(reverse("retention:import"), {"files": [upload("partners.csv")]})
    assert response.status_code == 403 and not ImportJob.objects.exists()
