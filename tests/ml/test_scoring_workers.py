"""The scoring chord with real Celery worker processes on Redis and PostgreSQL: the nightly
task fans chunks out, the callback closes the run, a failing chunk ends it failed (audited),
and a retry scores the same run to the end."""

import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from agent.models import AuditEvent
from ml.models import PartnerScore, RiskScore, ScoringRun
from ml.services import model_version_register
from ml.tasks import retry_scoring_run, score_all_partners
from retention.models import Partner
from tests.agent.workers import WorkerPool
from tests.ml.conftest import load_world

pytestmark = [pytest.mark.celery, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def markers(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("failpoints")


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker, tmp_path_factory, media, markers):
    if connection.vendor != "postgresql":
        pytest.skip("worker tests need PostgreSQL (set DATABASE_URL)")
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("worker tests need Redis (set REDIS_URL)")
    # The workers read model artifacts from the same media root the test writes them to.
    # Every worker carries the chunk failpoint; it fires only when a test arms it (a file).
    env = {
        "MEDIA_ROOT": str(media),
        "CHURNSITE_FAILPOINTS": "ml.score_chunk=raise",
        "CHURNSITE_FAILPOINT_DIR": str(markers),
    }
    pool = WorkerPool(count=2, outbox=tmp_path_factory.mktemp("outbox"), extra_env=env)
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def model_version(workers, trained, small_world, settings, media):
    settings.MEDIA_ROOT = media
    load_world(small_world)
    model, report = trained
    return model_version_register(model=model, report=report, activate=True)


def wait_for_run(run_id: int, status: str, timeout: float = 180) -> ScoringRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = ScoringRun.objects.get(pk=run_id)
        if run.status == status:
            return run
        time.sleep(0.5)
    run = ScoringRun.objects.get(pk=run_id)
    raise AssertionError(f"run {run_id} is {run.status}, not {status}: {run.stats.get('error')}")


def test_a_failing_chunk_ends_the_run_failed_and_audited_and_a_retry_finishes_it(
    workers, model_version, media
):
    artifact = media / model_version.artifact_path
    good = artifact.read_bytes()
    # A half-copied artifact: every chunk's worker refuses it (checksum) and the chunk fails.
    artifact.write_bytes(good[: len(good) // 2])
    active = Partner.objects.filter(status=Partner.Status.ACTIVE).count()
    started = score_all_partners.apply_async(kwargs={"chunk_size": 400}, queue=workers.queue).get(timeout=60)
    assert started["chunks"] == -(-active // 400) > 1

    failed = wait_for_run(started["run"], ScoringRun.Status.FAILED)
    assert failed.finished_at is not None and "ArtifactChecksumError" in failed.stats["error"]
    event = AuditEvent.objects.get(event_type="scoring_failed")
    assert event.payload["run"] == failed.pk and "does not match" in event.payload["error"]
    assert not PartnerScore.objects.exists()

    artifact.write_bytes(good)
    retry_scoring_run.apply_async(args=[failed.pk], kwargs={"chunk_size": 400}, queue=workers.queue).get(
        timeout=60
    )
    done = wait_for_run(failed.pk, ScoringRun.Status.SUCCEEDED)
    assert done.scored == active and PartnerScore.objects.filter(run=done).count() == active
    assert "error" not in done.stats
    assert AuditEvent.objects.filter(event_type="scoring_retried", payload__run=done.pk).exists()
    assert AuditEvent.objects.filter(event_type="scoring_finished", payload__run=done.pk).exists()


def test_the_nightly_task_scores_every_active_partner_through_the_chord_on_workers(workers, model_version):
    started = score_all_partners.apply_async(kwargs={"chunk_size": 500}, queue=workers.queue).get(timeout=60)
    run = wait_for_run(started["run"], ScoringRun.Status.SUCCEEDED)
    active = Partner.objects.filter(status=Partner.Status.ACTIVE).count()
    assert started == {"run": run.pk, "chunks": -(-active // 500), "partners": active}
    assert run.scored == active == RiskScore.objects.filter(run=run).count()
    assert PartnerScore.objects.filter(run=run).count() == active
    # The callback summed every chunk's stage times into the run.
    assert set(run.stats["stages"]) == {"read_ids", "features", "predict", "drivers", "persist", "vacuum"}
    # The close vacuumed the staged scores before swapping them in: the feed's table has its
    # visibility map (index-only scans skip the heap) without waiting for autovacuum.
    with connection.cursor() as cursor:
        cursor.execute("SELECT relallvisible, relpages FROM pg_class WHERE relname = 'ml_partnerscore'")
        all_visible, pages = cursor.fetchone()
    assert all_visible == pages > 0
    assert run.stats["drivers_computed"] == PartnerScore.objects.filter(drivers__isnull=False).count()


def test_one_failing_chunk_fails_the_run_and_the_retry_scores_every_partner_exactly_once(
    workers, model_version, markers
):
    active = set(Partner.objects.filter(status=Partner.Status.ACTIVE).values_list("pk", flat=True))
    (markers / "ml.score_chunk.arm").touch()  # the first chunk to reach persistence raises
    started = score_all_partners.apply_async(kwargs={"chunk_size": 200}, queue=workers.queue).get(timeout=60)
    assert started["chunks"] == -(-len(active) // 200) > 2

    failed = wait_for_run(started["run"], ScoringRun.Status.FAILED)
    assert not (markers / "ml.score_chunk.arm").exists()
    assert "raised FailpointError('failpoint ml.score_chunk fired')" in failed.stats["error"]
    event = AuditEvent.objects.get(event_type="scoring_failed", payload__run=failed.pk)
    assert event.payload["status"] == ScoringRun.Status.FAILED and "FailpointError" in event.payload["error"]
    # The other chunks wrote their partners; the failed one wrote nothing.
    assert 0 < RiskScore.objects.filter(run=failed).count() <= len(active) - 200

    retry_scoring_run.apply_async(args=[failed.pk], kwargs={"chunk_size": 200}, queue=workers.queue).get(
        timeout=60
    )
    done = wait_for_run(failed.pk, ScoringRun.Status.SUCCEEDED)
    history = RiskScore.objects.filter(run=done)
    assert done.scored == history.count() == len(active)
    assert set(history.values_list("partner_id", flat=True)) == active
    assert not history.values("partner_id").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert set(PartnerScore.objects.filter(run=done).values_list("partner_id", flat=True)) == active
    assert AuditEvent.objects.filter(event_type="scoring_retried", payload__run=done.pk).count() == 1
    assert AuditEvent.objects.filter(event_type="scoring_finished", payload__run=done.pk).count() == 1
