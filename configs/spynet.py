"""SPyNet on procedural synthetic flow: ``--config configs/spynet.py:<variant>``.

Variants:

``official``
    The original SPyNet training recipe's scale (Ranjan & Black 2017: Adam with beta = (0.9,
    0.999), learning rate 1e-4, batch 32; paper facts, not re-verified here), trained end to end
    on 320x448 synthetic pairs instead of Flying Chairs.  For accelerators.
``tiny``
    CPU smoke run (2 cores: about two minutes): 32x32 pairs, batch 8, 150 steps, lr 1e-3, with
    stronger motion than the generator's default so that flow is worth learning at this size.
``test``
    The unit-test size: ``tiny`` with fewer steps and a small held-out set.

Every key can be overridden: ``--config.optim.lr=3e-4 --config.model.dtype=bfloat16``.
"""

import ml_collections

from configs import train_block


def get_config(arg=None):
    variant = arg or "official"
    c = ml_collections.ConfigDict()
    c.task = "spynet"
    c.seed = 0
    c.parallel = "mesh"  # 'mesh' (jit + NamedSharding) or 'pmap'
    c.model = dict(variant="mmagic", dtype="float32", param_dtype="float32", zero_init_flow_head=False)
    c.data = dict(
        batch_size=32,  # global batch (all processes)
        height=320,
        width=448,
        num_objects=2,
        camera_speed=0.02,  # fractions of min(H, W) per frame (see data.synthetic)
        object_speed=(0.015, 0.04),
        camera_zoom=0.01,
        camera_rotation=0.01,
        random_reverse=True,
        eval_clips=64,
        eval_batch_size=32,
        eval_seed=1000,
    )
    c.optim = dict(
        name="adam",
        lr=1e-4,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        schedule="constant",
        warmup_steps=0,
        min_lr=0.0,
        grad_clip_norm=0.0,
    )
    c.train = train_block(200_000)
    if variant == "official":
        pass
    elif variant in ("tiny", "test"):
        c.data.update(
            batch_size=8,
            height=32,
            width=32,
            camera_speed=0.05,
            object_speed=(0.03, 0.08),
            eval_clips=32,
            eval_batch_size=16,
        )
        c.optim.update(lr=1e-3, grad_clip_norm=1.0)
        c.train.update(num_steps=150, log_every=10, eval_every=50, checkpoint_every=50, prefetch=2)
        if variant == "test":
            c.data.update(eval_clips=8, eval_batch_size=8)
            c.train.update(
                num_steps=4, log_every=2, eval_every=0, checkpoint_every=2, progress=False, tensorboard=False
            )
    else:
        raise ValueError(f"configs/spynet.py: unknown variant {variant!r} (official, tiny, test)")
    return c.lock()
