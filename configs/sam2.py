"""SAM 2 on click / box prompts (image mode): ``--config configs/sam2.py:<variant>``.

Variants (task: ``peanut_jax/train/tasks/sam2.py``, which says what follows the official SAM 2
training code and what does not):

``tiny``
    The SAM 2 of the ``tiny`` SAMWISE recipe (``models.samwise.config.TINY_TEST``: SAM 2 v2.0,
    ``tiny_test`` Hiera, 128x128) trained from scratch on one-frame synthetic referring scenes
    (``peanut_jax.data.referring``): clicks, a quarter of the prompts boxes; AdamW lr 1e-3 with a
    warm-up cosine schedule.  ``configs/samwise.py:tiny`` reads the result with
    ``--config.model.init_sam2=WORKDIR`` (see README, "SAMWISE: the tiny recipe").
``test``
    The unit-test size: ``tiny`` with batch 2 and 2 steps.

No variant reproduces the official SAM 2 training (SA-1B + SA-V video clips with memory and
corrective clicks); that needs the datasets and accelerators.
"""

import ml_collections

from configs import train_block


def get_config(arg=None):
    variant = arg or "tiny"
    variants = ("tiny", "test")
    if variant not in variants:
        raise ValueError(f"configs/sam2.py: unknown variant {variant!r} ({', '.join(variants)})")
    c = ml_collections.ConfigDict()
    c.task = "sam2"
    c.seed = 0
    c.parallel = "mesh"
    # the SAM 2 inside SAMWISE tiny_test (SAMWISEConfig.sam2: v2.0, no stability-based multimask choice)
    c.model = dict(
        name="sam2",
        size="tiny_test",
        version="2.0",
        dynamic_multimask_via_stability=False,
        dtype="float32",
        param_dtype="float32",
    )
    c.data = dict(
        source="synthetic",
        batch_size=32,
        height=128,
        width=128,
        num_objects=3,
        distractors=True,
        box_fraction=0.25,
        eval_clips=64,
        eval_batch_size=32,
        eval_seed=1000,
    )
    c.optim = dict(
        name="adamw",
        lr=1e-3,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.01,
        schedule="warmup_cosine",
        warmup_steps=100,
        min_lr=1e-5,
        grad_clip_norm=1.0,
    )
    c.train = train_block(2000, log_every=25, eval_every=500, checkpoint_every=500, prefetch=2, tensorboard=False)
    if variant == "test":
        c.data.update(batch_size=2, eval_clips=4, eval_batch_size=2)
        c.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2, progress=False)
    return c.lock()
