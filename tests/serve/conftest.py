"""Fixtures of the serving tests (helpers live in serve_util.py); without the serving extras
the whole folder is skipped."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="serving extras not installed (pip install 'ember[serve]')")
pytest.importorskip("httpx", reason="httpx not installed")


@pytest.fixture(scope="session")
def smollm2_path():
    from ember import hub
    return hub.resolve("smollm2-135m")


@pytest.fixture(scope="session")
def minilm_path():
    from ember import hub
    return hub.resolve("minilm-l6")
