"""Fixtures for the tuning tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_ray_cluster(monkeypatch):
    """Fail a test that would start or join a Ray cluster (``ray.init``, or a Ray API that calls
    it implicitly), and check afterwards that none is connected: unit tests of the searchers and
    of the results table must run beside another process's cluster."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("this unit test must not start or join a Ray cluster")

    assert not ray.is_initialized()
    monkeypatch.setattr(ray, "init", refuse)
    yield
    assert not ray.is_initialized()
