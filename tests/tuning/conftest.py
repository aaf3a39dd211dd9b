"""Fixtures for the tuning tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_ray_cluster(monkeypatch):
    """Fail a test that would start or join a Ray cluster (``ray.init``, or a Ray API that calls
    it implicitly): unit tests of the searchers and of the results table need none. In the full
    suite the session's cluster may already be up (then nothing can start another); run alone,
    these tests must leave no cluster behind."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("this unit test must not start or join a Ray cluster")

    was_up = ray.is_initialized()
    monkeypatch.setattr(ray, "init", refuse)
    yield
    assert ray.is_initialized() == was_up
