"""Fixtures shared by the integration tests (the process-wide ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.raw_http import RecordingUpstream


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingUpstream]:
    """A raw upstream that records every request it receives and answers each with 200."""
    upstream = await RecordingUpstream().start()
    yield upstream
    upstream.close()
