"""Training from the database, the registry, scoring and drivers on demand (real PostgreSQL)."""

import json
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, transaction

from agent.models import AuditEvent
from ml import registry
from ml.models import ModelVersion, PartnerScore, RiskScore, ScoringRun, SimulatedWorld
from ml.selectors import partner_drivers
from ml.services import ModelActivationError, model_version_activate, score_chunk
from retention.models import Partner
from tests.conftest import last_json
from tests.factories import ModelVersionFactory
from tests.ml.conftest import load_world


@pytest.fixture(scope="module")
def scored_db(django_db_setup, django_db_blocker, small_world, settings_module):
    """The small world in the database, trained and scored once for this module, inside a
    transaction rolled back at the end (each test's own changes roll back to a savepoint)."""
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            load_world(small_world)
            # The world's "today"; its hidden state file is absent, so no oracle figures.
            SimulatedWorld.objects.create(
                seed=7, n_partners=1500, months=18, started_on=small_world.today, today=small_world.today,
                state_path="worlds/missing.json.gz",
            )  # fmt: skip
            out = StringIO()
            call_command("train_churn_model", stdout=out, stderr=StringIO())
            train = last_json(out)
            out = StringIO()
            call_command("score_partners", "--chunk-size", "400", stdout=out)
            score = last_json(out)
            yield {"train": train, "score": score}
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture(scope="module")
def settings_module(tmp_path_factory):
    """Artifacts go to a temporary media root for this module."""
    from django.conf import settings

    old = settings.MEDIA_ROOT
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
    yield settings
    settings.MEDIA_ROOT = old


def test_training_prints_the_report_and_activates_the_new_version(scored_db, db):
    train = scored_db["train"]
    for key in (
        "roc_auc",
        "pr_auc",
        "brier",
        "ece",
        "bucket_macro_f1",
        "bucket_confusion",
        "n_train",
        "n_test",
    ):
        assert train[key] is not None
    assert "oracle_auc" not in train  # no SimulatedWorld row: no oracle
    version = ModelVersion.objects.get(pk=train["model_version"])
    assert version.is_active and version.source == "database"
    assert len(version.artifact_sha256) == 64
    assert "days_since_last_payment" in version.features and "trend_velocity" in version.features
    event = AuditEvent.objects.get(event_type="model_activated")
    assert event.payload["model_version"] == version.pk


def test_scoring_writes_a_history_row_and_a_current_score_per_active_partner(scored_db, db):
    score = scored_db["score"]
    active = Partner.objects.filter(status="active").count()
    assert score["scored"] == active > 0
    run = ScoringRun.objects.get(pk=score["run"])
    assert run.status == "succeeded" and run.scored == active
    assert RiskScore.objects.filter(run=run).count() == active
    assert PartnerScore.objects.count() == active
    for s in PartnerScore.objects.all()[:300]:
        assert s.p_7d + s.p_30d + s.p_90d + s.p_later == pytest.approx(1.0)
        assert s.p_later == pytest.approx(1 - s.risk)
        assert (s.bucket != "later") == (s.risk >= settings.AT_RISK_LEVEL)
        assert s.urgency_rank == {"7d": 0, "30d": 1, "90d": 2, "later": 3}[s.bucket]
        assert float(s.revenue_at_risk) == pytest.approx(s.risk * float(s.partner.monthly_revenue), abs=0.011)


def test_drivers_are_stored_for_every_partner_at_or_above_the_at_risk_level_only(scored_db, db):
    high = PartnerScore.objects.filter(risk__gte=settings.AT_RISK_LEVEL)
    low = PartnerScore.objects.filter(risk__lt=settings.AT_RISK_LEVEL)
    assert high.exists() and low.exists()
    assert not high.filter(drivers__isnull=True).exists()
    assert scored_db["score"]["drivers_computed"] == high.count()
    first = high.first().drivers
    assert 3 <= len(first) <= 5 and {"feature", "text", "value", "points"} == set(first[0])


def test_drivers_for_a_low_risk_partner_are_computed_on_demand_and_cached(scored_db, db):
    score = (
        PartnerScore.objects.filter(risk__lt=settings.AT_RISK_LEVEL, drivers__isnull=True)
        .select_related("partner")
        .first()
    )
    drivers = partner_drivers(partner=score.partner)
    assert 3 <= len(drivers) <= 5
    assert all(isinstance(d["points"], float) for d in drivers)
    score.refresh_from_db()
    assert score.drivers == drivers
    assert partner_drivers(partner=score.partner) == drivers


def test_a_chunk_delivered_twice_writes_nothing_twice(scored_db, db):
    run = ScoringRun.objects.get(pk=scored_db["score"]["run"])
    ids = list(RiskScore.objects.filter(run=run).values_list("partner_id", flat=True)[:50])
    before = RiskScore.objects.filter(run=run).count()
    score_chunk(run_id=run.pk, partner_ids=ids)
    assert RiskScore.objects.filter(run=run).count() == before


def test_only_one_version_can_be_active(scored_db, db):
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersionFactory(is_active=True)


def test_activating_a_version_deactivates_the_previous_one_and_leaves_an_audit_line(scored_db, db, manager):
    current = ModelVersion.objects.get(is_active=True)
    other = ModelVersionFactory(artifact_sha256=current.artifact_sha256, artifact_path=current.artifact_path)
    model_version_activate(version=other, actor=manager)
    current.refresh_from_db()
    assert not current.is_active and ModelVersion.objects.get(is_active=True) == other
    event = AuditEvent.objects.filter(event_type="model_activated").order_by("-pk").first()
    assert event.actor_user == manager and event.payload["previous"] == [current.pk]


def test_a_csv_model_cannot_be_activated_for_scoring(db):
    version = ModelVersionFactory(source="csv")
    with pytest.raises(ModelActivationError):
        model_version_activate(version=version)


def test_a_tampered_artifact_is_refused(scored_db, db):
    version = ModelVersion.objects.get(is_active=True)
    version.artifact_sha256 = "f" * 64
    with pytest.raises(RuntimeError, match="sha256"):
        registry.model_for_version(version)


@pytest.fixture
def eager():
    """Run the chord in-process (real workers are exercised by the agent's Celery tests)."""
    from churnsite.celery import app

    old = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = old


def test_the_nightly_task_scores_everyone_through_a_group_of_chunk_tasks(scored_db, db, eager):
    from ml import tasks

    result = tasks.score_all_partners.apply(kwargs={"chunk_size": 300}).get()
    active = Partner.objects.filter(status="active").count()
    assert result["chunks"] == -(-active // 300) and result["partners"] == active
    run = ScoringRun.objects.get(pk=result["run"])
    assert run.status == "succeeded" and run.scored == active
    assert PartnerScore.objects.filter(run=run).count() == active


def test_a_partner_who_churned_leaves_the_current_scores_but_keeps_its_history(scored_db, db):
    from ml.services import scoring_run_finish, scoring_run_start

    score = PartnerScore.objects.select_related("partner").first()
    partner = score.partner
    Partner.objects.filter(pk=partner.pk).update(status="churned", churned_on=partner.joined_on)
    run = scoring_run_start()
    score_chunk(run_id=run.pk, partner_ids=[partner.pk])
    scoring_run_finish(run_id=run.pk)
    assert not PartnerScore.objects.filter(partner=partner).exists()
    assert RiskScore.objects.filter(partner=partner).exists()


def test_a_run_counts_the_model_pages_risk_histogram_at_its_close_and_the_page_reads_it(
    scored_db, db, django_assert_num_queries
):
    from ml.selectors import current_risk_histogram
    from ml.services import risk_histogram_count, scoring_run_finish, scoring_run_start

    run = ScoringRun.objects.get(pk=scored_db["score"]["run"])
    assert run.stats["risk_histogram"] == risk_histogram_count()
    assert sum(run.stats["risk_histogram"]) == PartnerScore.objects.count() > 0
    with django_assert_num_queries(1):  # the latest run, not the 1M scores
        assert current_risk_histogram() == run.stats["risk_histogram"]
    # A partner who churned leaves the counts at the next close.
    gone = PartnerScore.objects.select_related("partner").first().partner
    Partner.objects.filter(pk=gone.pk).update(status="churned", churned_on=gone.joined_on)
    later = scoring_run_start()
    score_chunk(run_id=later.pk, partner_ids=[gone.pk])
    scoring_run_finish(run_id=later.pk)
    assert (
        sum(current_risk_histogram()) == PartnerScore.objects.count() == sum(run.stats["risk_histogram"]) - 1
    )


def test_drivers_of_a_score_whose_artifact_is_missing_are_empty_not_an_error(db):
    from tests.factories import PartnerScoreFactory

    score = PartnerScoreFactory(drivers=None, partner__external_id="X1")  # no such artifact
    assert partner_drivers(partner=score.partner) == []


def test_a_backfill_at_a_past_date_fills_the_history_and_leaves_the_current_scores(
    scored_db, db, retention_client
):
    import datetime as dt

    from ml.features import build_features
    from ml.frames import history_frames
    from ml.registry import model_for_version

    today = SimulatedWorld.objects.get().today
    past = today - dt.timedelta(days=60)
    current_before = list(
        PartnerScore.objects.order_by("partner_id").values_list("partner_id", "run_id", "risk")
    )
    then_active = Partner.objects.filter(joined_on__lte=past).exclude(status="churned", churned_on__lte=past)
    gone_since = then_active.filter(status="churned")  # active then, churned since
    assert gone_since.exists()

    out = StringIO()
    call_command("score_partners", "--as-of", past.isoformat(), stdout=out)
    summary = last_json(out)

    run = ScoringRun.objects.get(pk=summary["run"])
    assert summary["backfill"] is True and run.backfill and run.as_of == past
    assert summary["scored"] == then_active.count()
    assert RiskScore.objects.filter(run=run, partner__in=gone_since).count() == gone_since.count()
    # The Live Feed, the agent and the feed's refresh keep reading today's scores.
    assert list(PartnerScore.objects.order_by("partner_id").values_list("partner_id", "run_id", "risk")) == (
        current_before
    )
    from retention.selectors import latest_scoring_run_id

    assert latest_scoring_run_id() == scored_db["score"]["run"]
    # The risk written is the model's at that date, from the history up to it.
    partner = then_active.filter(status="active").order_by("pk").first()
    partners, activity, invoices = history_frames(key="partner_id", partner_ids=[partner.pk])
    model = model_for_version(run.model_version)
    X = build_features(partners, activity, invoices, past, churn_table=model.churn_table, key="partner_id")
    expected = float(model.predict(X)["risk"].iloc[0])
    assert RiskScore.objects.get(run=run, partner=partner).risk == pytest.approx(expected, abs=1e-9)

    # The partner page charts both dates, by the date they describe, oldest first.
    html = retention_client.get(f"/partners/{partner.external_id}/").content.decode()
    assert html.index(past.isoformat()) > html.index(today.isoformat())  # the table lists newest first
    assert past.strftime("%d %b %y") in html and today.strftime("%d %b %y") in html
    assert f"As of {today.isoformat()} · scored" in html  # the score card: today's run, not the backfill


def test_scoring_refuses_a_date_after_the_data(scored_db, db):
    import datetime as dt

    from django.core.management import CommandError

    later = SimulatedWorld.objects.get().today + dt.timedelta(days=1)
    with pytest.raises(CommandError, match="cannot score at"):
        call_command("score_partners", "--as-of", later.isoformat(), stdout=StringIO())


@pytest.mark.parametrize("writer", ["copy", "staged", "orm"])
def test_every_writer_records_the_change_since_the_previous_run_and_keeps_it_on_redelivery(
    scored_db, db, writer
):
    from decimal import Decimal

    from django.db import connection

    from ml import score_store
    from ml.services import scoring_run_start

    if writer != "orm" and connection.vendor != "postgresql":
        pytest.skip("the COPY writers are PostgreSQL's")
    write = score_store._persist_orm if writer == "orm" else score_store._persist_copy
    first = ScoringRun.objects.get(pk=scored_db["score"]["run"])
    before = {s.partner_id: s for s in PartnerScore.objects.filter(run=first).select_related("partner")[:40]}
    second = scoring_run_start()
    now = second.started_at
    if writer == "staged":  # a dispatched run: current scores staged, swapped in at its close
        assert score_store.current_stage_open(run=second)

    def rows(risk: float) -> list[tuple]:
        drivers = [{"feature": "days_overdue", "points": 3.5}]
        return [(pid, risk, 0.1, 0.2, 0.3, 0.4, "30d", 1, json.dumps(drivers)) for pid in before]

    write(second, rows(0.5), current=True, now=now)
    # Redelivered with other figures: the history keeps the first write, the comparison stays
    # with the first run's score (not this run's own earlier write).
    write(second, rows(0.625), current=True, now=now)
    if writer == "staged":
        assert PartnerScore.objects.filter(run=second).count() == 0  # the feed reads the first run's
        assert score_store.current_stage_swap(run=second) is not None
    after = {s.partner_id: s for s in PartnerScore.objects.filter(partner_id__in=before)}
    for pid, old in before.items():
        new = after[pid]
        assert new.run_id == second.pk and new.risk == 0.625 and new.urgency_rank == 1
        assert new.previous_risk == old.risk and new.previous_as_of == first.as_of
        assert new.risk_change == pytest.approx(0.625 - old.risk)
        assert new.revenue_at_risk == (old.partner.monthly_revenue * Decimal("0.625")).quantize(
            Decimal("0.01")
        )
        assert new.drivers == [{"feature": "days_overdue", "points": 3.5}]
    history = RiskScore.objects.filter(run=second)
    assert history.count() == len(before) and set(history.values_list("risk", flat=True)) == {0.5}


@pytest.mark.parametrize("writer", ["copy", "staged", "orm"])
def test_every_writer_copies_the_partners_name_and_a_rename_during_the_run_reaches_it(scored_db, db, writer):
    """The feed's name search reads the score row's copy of the name (migration 0017): it is
    the partner's name whichever writer wrote the row, also for a partner renamed after its
    chunk was written and before the run's close swapped the chunk in."""
    from django.db import connection

    from ml import score_store
    from ml.services import scoring_run_start

    if writer != "orm" and connection.vendor != "postgresql":
        pytest.skip("the COPY writers are PostgreSQL's")
    write = score_store._persist_orm if writer == "orm" else score_store._persist_copy
    first = ScoringRun.objects.get(pk=scored_db["score"]["run"])
    ids = list(PartnerScore.objects.filter(run=first).values_list("partner_id", flat=True)[:20])
    second = scoring_run_start()
    if writer == "staged":
        assert score_store.current_stage_open(run=second)
    rows = [(pid, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None) for pid in ids]

    write(second, rows, current=True, now=second.started_at)
    # A queryset update: no model signal, only the database's trigger sees it.
    Partner.objects.filter(pk=ids[0]).update(name="Renamed Mid-Run Co")
    if writer == "staged":
        # The rename commits before the close in real life; here, in the test's transaction,
        # its score row's deferred key check must run before the swap may drop the table.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert score_store.current_stage_swap(run=second) is not None

    copies = dict(PartnerScore.objects.filter(partner_id__in=ids).values_list("partner_id", "partner_name"))
    names = dict(Partner.objects.filter(pk__in=ids).values_list("pk", "name"))
    assert copies == names and copies[ids[0]] == "Renamed Mid-Run Co" and len(set(names.values())) == 20
    assert set(PartnerScore.objects.filter(partner_id__in=ids).values_list("run_id", flat=True)) == {
        second.pk
    }


def test_training_above_the_partner_budget_learns_from_a_fixed_random_sample(scored_db, db, tmp_path):
    from ml.management.commands.train_churn_model import partner_sample

    assert (
        partner_sample(budget=600, seed=3)
        == partner_sample(budget=600, seed=3)
        != partner_sample(budget=600, seed=4)
    )
    assert partner_sample(budget=Partner.objects.count(), seed=3) is None
    out = StringIO()
    report = tmp_path / "report.json"
    call_command(
        "train_churn_model", "--partner-budget", "600", "--no-activate", "--report", str(report), stdout=out,
        stderr=StringIO(),
    )  # fmt: skip
    full = json.loads(report.read_text())
    assert full["partner_sample"] == {"budget": 600, "sampled": True, "partners": 600}
    assert full["n_train_partners"] + full["n_test_partners"] <= 600
    assert full["roc_auc"] > 0.6
    assert ModelVersion.objects.get(is_active=True).pk != last_json(out)["model_version"]


def _schema(table: str) -> tuple[set, set]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        indexes = set(cur.fetchall())
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conrelid = %s::regclass",
            [table],
        )
        return indexes, set(cur.fetchall())


def test_a_run_swaps_its_scores_in_with_every_index_and_key_and_leaves_no_staging_table(scored_db, db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs stage their current scores on PostgreSQL only")
    first = ScoringRun.objects.get(pk=scored_db["score"]["run"])
    old = dict(PartnerScore.objects.values_list("partner_id", "risk"))
    schema = _schema("ml_partnerscore")
    assert len(schema[0]) >= 10  # the feed's and the API's indexes, the keys

    out = StringIO()
    call_command("score_partners", "--chunk-size", "400", stdout=out)
    summary = last_json(out)
    run = ScoringRun.objects.get(pk=summary["run"])
    assert _schema("ml_partnerscore") == schema  # same names, definitions, validated keys
    scores = list(
        PartnerScore.objects.values_list("partner_id", "run_id", "risk", "previous_risk", "previous_as_of")
    )
    assert len(scores) == Partner.objects.filter(status="active").count() == summary["scored"]
    assert {r for _, r, *_ in scores} == {run.pk}
    assert all(prev == old[pid] and as_of == first.as_of for pid, _, _, prev, as_of in scores)
    assert run.stats["persist_swap"] > 0 and run.stats["stages"]["persist"] >= run.stats["persist_swap"]
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^ml_partnerscore_run_[0-9]+$'")
        assert cur.fetchone()[0] == 0


def test_a_failed_run_leaves_the_current_scores_alone_and_its_retry_swaps_them_all_in(scored_db, db):
    from django.db import connection

    from ml.services import scoring_run_finish, scoring_run_retry, scoring_run_start
    from ml.tasks import scoring_run_dispatch

    if connection.vendor != "postgresql":
        pytest.skip("runs stage their current scores on PostgreSQL only")
    before = list(PartnerScore.objects.order_by("partner_id").values_list("partner_id", "run_id", "risk"))
    run = scoring_run_start()
    assert score_store_open(run)
    score_chunk(run_id=run.pk, partner_ids=[pid for pid, *_ in before[:100]])  # one chunk got through
    scoring_run_finish(run_id=run.pk, error="RuntimeError: a later chunk failed")
    assert (
        list(PartnerScore.objects.order_by("partner_id").values_list("partner_id", "run_id", "risk"))
        == before
    )

    scoring_run_retry(run_id=run.pk)
    scoring_run_dispatch(run_id=run.pk, chunk_size=400, in_process=True)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert PartnerScore.objects.filter(run=run).count() == len(before) == run.scored


def test_active_partners_a_run_did_not_score_keep_their_current_score(scored_db, db):
    from django.db import connection

    from ml.services import scoring_run_finish, scoring_run_start

    if connection.vendor != "postgresql":
        pytest.skip("runs stage their current scores on PostgreSQL only")
    first = scored_db["score"]["run"]
    ids = list(PartnerScore.objects.order_by("partner_id").values_list("partner_id", flat=True))
    run = scoring_run_start()
    assert score_store_open(run)
    score_chunk(run_id=run.pk, partner_ids=ids[:300])
    scoring_run_finish(run_id=run.pk)
    runs = dict(PartnerScore.objects.values_list("partner_id", "run_id"))
    assert len(runs) == len(ids)
    assert {runs[p] for p in ids[:300]} == {run.pk} and {runs[p] for p in ids[300:]} == {first}


def score_store_open(run) -> bool:
    from ml.score_store import current_stage_open

    return current_stage_open(run=run)


@pytest.mark.parametrize("writer", ["copy", "staged", "backfill", "orm"])
def test_a_chunk_naming_a_partner_that_is_gone_fails_and_writes_nothing(scored_db, db, writer):
    # The history has no database key on the partner (ml.models): the writer checks instead.
    from django.db import connection

    from ml import score_store
    from ml.services import scoring_run_start

    if writer != "orm" and connection.vendor != "postgresql":
        pytest.skip("the COPY writers are PostgreSQL's")
    write = score_store._persist_orm if writer == "orm" else score_store._persist_copy
    run = scoring_run_start()
    if writer == "staged":
        assert score_store.current_stage_open(run=run)
    ids = list(Partner.objects.filter(status=Partner.Status.ACTIVE).values_list("pk", flat=True)[:20])
    gone = max(Partner.objects.values_list("pk", flat=True)) + 1
    rows = [(pid, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None) for pid in [*ids, gone]]
    current = writer != "backfill"  # a backfill writes history only
    with pytest.raises(IntegrityError, match="1 of the chunk's partners are gone"):
        with transaction.atomic():
            write(run, rows, current=current, now=run.started_at)
    assert not RiskScore.objects.filter(run=run).exists()
    write(run, rows[:-1], current=current, now=run.started_at)  # the chunk without it is written
    assert RiskScore.objects.filter(run=run).count() == len(ids)


def test_on_postgresql_a_partner_with_history_cannot_be_deleted_behind_djangos_back(db):
    from django.db import connection
    from django.utils import timezone

    from ml import score_store
    from tests.factories import PartnerFactory, ScoringRunFactory

    if connection.vendor != "postgresql":
        pytest.skip("the trigger is PostgreSQL's")
    partner, run = PartnerFactory(external_id="P-HISTORY-ONLY"), ScoringRunFactory()
    score_store._persist_copy(
        run, [(partner.pk, 0.5, 0.1, 0.2, 0.3, 0.4, "30d", 1, None)], current=False, now=timezone.now()
    )
    with pytest.raises(IntegrityError, match="still has score history"):
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("DELETE FROM retention_partner WHERE id = %s", [partner.pk])
    assert Partner.objects.filter(pk=partner.pk).exists()
    partner.delete()  # Django's delete cascades to the history first, so it goes through
    assert not RiskScore.objects.filter(partner_id=partner.pk).exists()
    assert not Partner.objects.filter(pk=partner.pk).exists()
