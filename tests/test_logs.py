"""What a user reads: Ray Train's per-rank report lines are turned down inside the workers."""

import logging


def test_ray_trains_per_rank_report_lines_are_turned_down():
    """The logger that writes "Reporting training result N: TrainingReport(...)" (Ray Train's
    own, named after its file) no longer passes INFO once a worker calls quiet_ray_train."""
    from ray.train.v2._internal.execution import context

    from transferkit.logs import quiet_ray_train

    source = context.logger  # the module's logger, as Ray Train uses it
    assert "Reporting training result" in open(context.__file__).read()
    before = source.level
    try:
        source.setLevel(logging.INFO)  # as in a worker, where Ray's logging config passes INFO
        quiet_ray_train()
        assert not source.isEnabledFor(logging.INFO)
        assert source.isEnabledFor(logging.WARNING)
    finally:
        source.setLevel(before)
        logging.getLogger("ray.train").setLevel(logging.NOTSET)
        logging.getLogger("ray.tune").setLevel(logging.NOTSET)
