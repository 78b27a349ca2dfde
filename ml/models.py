from django.conf import settings
from django.db import models
from django.db.models import Q

from churnsite.db import TimeStampedModel
from ml.levels import AT_RISK_LEVEL


class Bucket(models.TextChoices):
    """Time-to-churn buckets, in order of urgency."""

    D7 = "7d", "~7 days"
    D30 = "30d", "~30 days"
    D90 = "90d", "~90 days"
    LATER = "later", "> 90 days"


# Lower rank = more urgent; the Live Feed sorts on it.
BUCKET_URGENCY_RANK: dict[str, int] = {Bucket.D7: 0, Bucket.D30: 1, Bucket.D90: 2, Bucket.LATER: 3}


class ModelSource(models.TextChoices):
    DATABASE = "database", "Partner database"
    CSV = "csv", "CSV file"


class ModelVersion(TimeStampedModel):
    Source = ModelSource

    trained_at = models.DateTimeField()
    window_start = models.DateField()
    window_end = models.DateField()
    features = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    artifact_path = models.CharField(max_length=500)
    artifact_sha256 = models.CharField(max_length=64)
    is_active = models.BooleanField(default=False)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.DATABASE)

    class Meta:
        ordering = ["-trained_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_model_version"
            ),
            models.CheckConstraint(
                condition=Q(source__in=ModelSource.values), name="modelversion_source_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Model v{self.pk} ({self.trained_at:%Y-%m-%d %H:%M})"


class ScoringRunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ScoringRun(TimeStampedModel):
    Status = ScoringRunStatus

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="scoring_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    scored = models.PositiveIntegerField(default=0)
    # The date the features were computed at (the simulated today in a demo world): the
    # partner page charts risk against it, not against the wall clock of the run.
    as_of = models.DateField(null=True, blank=True)
    # A run at a past date fills the history; it never replaces the current scores.
    backfill = models.BooleanField(default=False)
    stats = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ScoringRunStatus.values), name="scoringrun_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Scoring run {self.pk} ({self.status})"


class ScoreFields(models.Model):
    risk = models.FloatField(help_text="P(churn within 90 days), calibrated")
    p_7d = models.FloatField()
    p_30d = models.FloatField()
    p_90d = models.FloatField()
    p_later = models.FloatField()
    bucket = models.CharField(max_length=5, choices=Bucket.choices)
    drivers = models.JSONField(null=True, blank=True, help_text="Top drivers; null until computed")
    scored_at = models.DateTimeField()

    class Meta:
        abstract = True


def _probability_checks(prefix: str) -> list[models.BaseConstraint]:
    return [
        models.CheckConstraint(
            condition=Q(**{f"{f}__gte": 0, f"{f}__lte": 1}), name=f"{prefix}_{f}_is_probability"
        )
        for f in ("risk", "p_7d", "p_30d", "p_90d", "p_later")
    ]


class RiskScore(ScoreFields):
    """History: one row per partner per scoring run."""

    # No single-column indexes on partner and run: (partner, scored_at) and the unique
    # (run, partner) lead with them and serve the same lookups and cascades, and every index
    # costs each scoring run one more write per partner (the history is the biggest table).
    # No database foreign keys: PostgreSQL checks one per row, a trigger call at insert and a
    # query at commit (the partner's alone was 60% of writing a chunk's history at 1M
    # partners). A chunk key-share locks its run and its version, and holds an advisory
    # guard that a partner's delete takes alone, then counts its partners, in one statement
    # each instead, and fails if one is gone (ml.score_store); Django still cascades and
    # protects, and on PostgreSQL a trigger refuses to delete a partner that still has
    # history (what the partner's key did; migrations 0014 and 0016).
    partner = models.ForeignKey(
        "retention.Partner",
        on_delete=models.CASCADE,
        related_name="risk_scores",
        db_index=False,
        db_constraint=False,
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    run = models.ForeignKey(
        ScoringRun, on_delete=models.CASCADE, related_name="scores", db_index=False, db_constraint=False
    )

    class Meta:
        ordering = ["-scored_at"]
        constraints = _probability_checks("riskscore") + [
            # A chunk task delivered twice must not write a second row for the same partner.
            models.UniqueConstraint(fields=["run", "partner"], name="riskscore_one_per_partner_per_run"),
        ]
        indexes = [
            # Partner page: a partner's risk over time.
            models.Index(fields=["partner", "scored_at"], name="riskscore_partner_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id} risk {self.risk:.0%} at {self.scored_at:%Y-%m-%d %H:%M}"


class PartnerScore(ScoreFields):
    """The current score of each partner, one row, so the Live Feed sorts 100k rows cheaply."""

    partner = models.OneToOneField(
        "retention.Partner", on_delete=models.CASCADE, primary_key=True, related_name="current_score"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey(ScoringRun, on_delete=models.SET_NULL, null=True, related_name="+")
    urgency_rank = models.PositiveSmallIntegerField(help_text="0 = ~7 days ... 3 = > 90 days")
    revenue_at_risk = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    # What changed: the partner's score in the previous current run (null on a first score).
    previous_risk = models.FloatField(null=True, blank=True)
    previous_as_of = models.DateField(null=True, blank=True)
    risk_change = models.FloatField(null=True, blank=True, help_text="risk - previous_risk")
    # The partner's name beside its sort keys, so a Live Feed name search that matches
    # thousands walks one sort index testing this column instead of looking up every partner
    # (retention.selectors.LiveFeedQuery). Written by scoring, kept in step with renames by a
    # trigger on retention_partner (migration 0017); the feed still tests the partner's own name.
    partner_name = models.CharField(max_length=200, default="", blank=True)

    class Meta:
        constraints = _probability_checks("partnerscore")
        indexes = [
            # Live Feed sort by biggest rise since the last run (the sort's NULLS LAST included),
            # then by partner as the sort does: after a first run every change is NULL (and 0 after
            # a rerun of the same day), and without the tiebreak PostgreSQL sorted all of them.
            models.Index(
                models.F("risk_change").desc(nulls_last=True), "partner", name="partnerscore_change_idx"
            ),
            # Live Feed "New at risk": a few hundred rows of 100k, in urgency order. Built for
            # the default level; a deployment with another AT_RISK_LEVEL reads the urgency index.
            models.Index(
                fields=["urgency_rank", "-risk"],
                condition=Q(risk__gte=AT_RISK_LEVEL, previous_risk__lt=AT_RISK_LEVEL),
                name="partnerscore_new_at_risk_idx",
            ),
            # Live Feed "New at risk" sorted by risk, and by revenue at risk: the plain sort
            # indexes meet a new-at-risk partner once in ~15 rows (66 ms for a page at 100k).
            models.Index(
                fields=["-risk"],
                condition=Q(risk__gte=AT_RISK_LEVEL, previous_risk__lt=AT_RISK_LEVEL),
                name="partnerscore_new_by_risk_idx",
            ),
            models.Index(
                fields=["-revenue_at_risk"],
                condition=Q(risk__gte=AT_RISK_LEVEL, previous_risk__lt=AT_RISK_LEVEL),
                name="partnerscore_new_by_rar_idx",
            ),
            # Live Feed default sort: urgency bucket, then risk.
            models.Index(fields=["urgency_rank", "-risk"], name="partnerscore_urgency_idx"),
            # Live Feed sort by risk.
            models.Index(fields=["-risk"], name="partnerscore_risk_idx"),
            # Live Feed sort by revenue at risk.
            models.Index(fields=["-revenue_at_risk"], name="partnerscore_rar_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id} risk {self.risk:.0%} ({self.bucket})"


class ScoringSummary(models.Model):
    """Per run and account owner, the desk's header strip figures, written once by scoring so
    the strip is one indexed read at 100k partners instead of an aggregate per page view."""

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="summaries")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    partners = models.PositiveIntegerField(default=0)
    at_risk = models.PositiveIntegerField(default=0)
    new_at_risk = models.PositiveIntegerField(default=0)
    worse = models.PositiveIntegerField(default=0)
    revenue_at_risk = models.DecimalField(
        max_digits=16, decimal_places=2, default=0, help_text="Sum of monthly revenue x risk"
    )

    class Meta:
        constraints = [
            # One row per owner per run; the partners nobody owns share the NULL row.
            models.UniqueConstraint(
                fields=["run", "owner"], condition=Q(owner__isnull=False), name="scoringsummary_one_per_owner"
            ),
            models.UniqueConstraint(
                fields=["run"], condition=Q(owner__isnull=True), name="scoringsummary_one_unowned"
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.run_id} owner {self.owner_id}: {self.at_risk} at risk"


class SimulatedWorld(TimeStampedModel):
    """The simulator's hidden truth behind the demo data (never read by training features).

    The partner tables hold only what a real company would see; the latent state that
    drives churn lives in a file under MEDIA_ROOT, so the clock can advance the world
    later and the model report can compare against the oracle.
    """

    seed = models.IntegerField()
    n_partners = models.PositiveIntegerField()
    months = models.PositiveSmallIntegerField()
    params = models.JSONField(default=dict)
    started_on = models.DateField(help_text="Simulated 'today' when the world was seeded")
    today = models.DateField(help_text="Simulated 'today' now (advanced by simulate_days)")
    state_path = models.CharField(max_length=500, help_text="Hidden state file, relative to MEDIA_ROOT")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Simulated world seed={self.seed} n={self.n_partners} today={self.today}"


class ValidationRun(TimeStampedModel):
    """A backtest of past scores against what happened, and drift since training
    (`validate_model`, nightly). ``reliability``: per 10-point band of the risk shown, the
    scores made ``horizon_days``+ before ``as_of`` (the data's today), their mean risk and
    the share of those partners that churned within the horizon. ``psi``: population
    stability index per feature, the training window's end against ``as_of``."""

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="validations"
    )
    as_of = models.DateField()
    scored_until = models.DateField(help_text="scores made on or before this date were judged")
    horizon_days = models.PositiveSmallIntegerField(default=90)
    n_scores = models.PositiveIntegerField(default=0)
    n_churned = models.PositiveIntegerField(default=0)
    reliability = models.JSONField(default=list, blank=True)
    psi = models.JSONField(default=dict, blank=True)
    max_psi = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Validation {self.pk} as of {self.as_of}"
