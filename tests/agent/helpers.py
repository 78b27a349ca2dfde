"""Shared fixtures and helpers for the agent's own tests (import the fixtures by name)."""

import pytest

from agent.models import AgentConfig
from tests.factories import UserFactory


@pytest.fixture
def agent_on(db):
    """The agent started, no control group (tests that want holdouts set control_fraction)."""
    config, _ = AgentConfig.objects.get_or_create(pk=1)
    config.enabled = True
    config.control_fraction = 0.0
    config.save()
    return config


@pytest.fixture
def owner(db):
    return UserFactory(
        username="olivia", first_name="Olivia", last_name="Owner", email="olivia@churnsite.example"
    )
