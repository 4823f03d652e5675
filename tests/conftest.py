"""Shared test setup: no network, tiny models built once per session into a temporary cache."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tiny models are written once per session here, then loaded through from_pretrained like real ones."""
    path = os.environ.get("WAN_STUDIO_TEST_CACHE") or str(tmp_path_factory.mktemp("wan-cache"))
    os.environ["WAN_STUDIO_CACHE"] = path
    os.environ["WAN_STUDIO_CONFIG"] = os.path.join(path, "config")  # the local signing key, never the user's
    return path


@pytest.fixture
def make_engine(tmp_path):
    """Build engines on a fresh outputs folder; every engine is shut down after the test."""
    from engine import Engine

    engines = []

    def make(model: str = "tiny-ti2v", **kwargs) -> Engine:
        kwargs.setdefault("outputs", tmp_path / "outputs")
        eng = Engine(model=model, **kwargs)
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        eng.shutdown()
