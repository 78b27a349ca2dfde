import pytest

from agent.llm import forget_formats, writer_key
from tests.agent.helpers import agent_on, owner  # noqa: F401 - the agent engineer's fixtures
from tests.openai_server import TEST_API_KEY, OpenAIServer

# The local OpenAI-compatible server ------------------------------------------------
# One real HTTP server per test session (a stable URL, so Celery worker processes started once
# per session can be pointed at it with `openai_server_session.env()`); every test gets it
# reset (no script, no latency, the default good reply, no recorded requests).


@pytest.fixture(scope="session")
def openai_server_session():
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(openai_server_session):
    openai_server_session.reset()
    yield openai_server_session
    openai_server_session.reset()


@pytest.fixture
def llm_settings(settings, openai_server):
    """Point the LLM client at the local server, with a short timeout and one retry."""
    settings.OPENAI_API_KEY = TEST_API_KEY
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_MODEL = "test-model"
    settings.OPENAI_TIMEOUT = 1.0
    settings.OPENAI_MAX_RETRIES = 1
    settings.RETENTION_BOOKING_URL = "https://book.churnsite.example/partner-success"
    # A model that earned trust already, unless the test is about earning it.
    settings.LLM_TRUSTED_AFTER = 0
    settings.OPENAI_CONCURRENCY = 0
    forget_formats(writer_key("test-model"))
    yield settings
    forget_formats()
