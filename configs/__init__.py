"""Training recipes (ml_collections): ``configs/<model>.py:get_config("variant")``."""


def train_block(num_steps: int, **overrides) -> dict:
    """The trainer settings (``config.train``, read by ``train/loop.py``) every recipe shares, with the
    recipe's own values in ``overrides``."""
    defaults = dict(
        num_steps=num_steps,
        log_every=100,
        eval_every=5_000,
        checkpoint_every=5_000,
        keep_checkpoints=3,
        async_checkpoint=True,
        prefetch=4,
        data_workers=0,  # worker processes building the training batches (0: in the training process)
        progress=True,
        tensorboard=True,
        eval_at_start=True,
        debug_nan_at_step=-1,
    )
    return {**defaults, **overrides}
