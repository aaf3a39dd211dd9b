"""Training on Ray Train: the per-worker loop, objectives, checkpoints. The only package that
calls ``ray.train``. Heavy imports are deferred to the functions that need them."""

__all__ = ["finetune"]


def finetune(*args, **kwargs):
    """See :func:`transferkit.training.trainer.finetune`."""
    from transferkit.training.trainer import finetune as _finetune

    return _finetune(*args, **kwargs)
