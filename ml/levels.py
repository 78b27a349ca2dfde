"""The desk's fixed lines, in one module with no imports (the model, the schema and the desk
read them; `settings.AT_RISK_LEVEL` overrides the at-risk level per deployment)."""

# The 90-day risk from which a partner is "at risk": the desk shows a churn window, counts
# the partner in the header strip and in "New at risk", scoring computes drivers and the chat
# alert fires. Below it a partner reads "Low risk". Also `settings.AT_RISK_LEVEL`'s default.
AT_RISK_LEVEL = 0.30
# A rise of at least one point (as shown, rounded) counts as "worse".
WORSE_BY = 0.005
