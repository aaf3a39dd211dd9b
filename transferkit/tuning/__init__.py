"""Ray Tune searches over transferkit training runs: each trial is a Ray Train run.

Heavy imports (ray, torch) are deferred to the functions that need them.
"""

__all__ = ["tune_search", "resume_search"]


def tune_search(*args, **kwargs):
    """See :func:`transferkit.tuning.search.tune_search`."""
    from transferkit.tuning.search import tune_search as _tune_search

    return _tune_search(*args, **kwargs)


def resume_search(*args, **kwargs):
    """See :func:`transferkit.tuning.search.resume_search`."""
    from transferkit.tuning.search import resume_search as _resume_search

    return _resume_search(*args, **kwargs)
