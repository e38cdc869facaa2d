"""E2FGVI / E2FGVI-HQ training: ``--config configs/e2fgvi.py:<variant>`` (task ``e2fgvi``).

Variants:

``official``
    The paper recipe (``configs/train_e2fgvi.json`` of the official code): E2FGVI at 432x240 on
    YouTube-VOS (TFDS ``youtube_vos_inpainting/432x240``, built from ``manual_dir`` with
    ``peanut_jax.data.tfds.build``), 5 local + 3 reference frames, random moving masks, batch 8,
    Adam(0, 0.99), lr 1e-4 x0.1 at 400k of 500k iterations for G and D, losses hole 1 + valid 1 +
    flow 1 + adversarial 0.01 (T-PatchGAN hinge), STC off, seed 2021.  The official run starts
    ``update_spynet`` and the frozen flow-loss SPyNet from pretrained SPyNet weights: pass them
    with ``--config.model.spynet_checkpoint=spynet_20210409-c6c1bd09.pth`` (mmagic/BasicVSR++
    SPyNet); without it both start from the generator's random SPyNet.
``hq``
    ``official`` with E2FGVI-HQ (``configs/train_e2fgvi_hq.json``: only the network differs).
``synthetic``
    E2FGVI-HQ at 240x432 on procedural synthetic clips (object masks and random masks, 50/50) with
    the STC loss on (weight 1): the object-removal recipe with exact ground truth, for accelerators.
``tiny``
    A small E2FGVI-HQ-family model (the same architecture with narrow layers and 2 transformer
    blocks, about 0.9M parameters besides SPyNet) on 60x108 synthetic clips of 3 local + 2
    reference frames, batch 4, Adam(0.9, 0.99) lr 1e-3 (x0.3 at 3000 and 3400), STC weight 0.5,
    object and random masks, 3800 steps (about an hour on two CPU cores).  Kernels are drawn
    N(0, 1/fan_in) (``model.init='fan_in'``: the official N(0, 0.02) is sized for the official
    widths and makes a narrow net start very slowly).  SPyNet starts at zero flow
    (``spynet_zero_init``) and is trained by the losses (no pretrained SPyNet on a CPU box); grouped
    convolutions are split (fast on CPU).  Held-out hole PSNR: 16.4 dB after 100 steps, 19.8 at
    1000, 21.3 at 3000 (before the lr drops), 21.9 dB at the end, against 12.2 dB for the masked
    input and 21.7 dB for normalised-blur fill (``benchmarks/RESULTS.md``).
    ``python train.py --config configs/e2fgvi.py:tiny --workdir runs/e2fgvi_tiny``.
``test``
    The unit-test size: ``tiny`` with a short run and a small held-out set.

Every key can be overridden, e.g. ``--config.loss.stc_weight=0.1 --config.data.tfds_data_dir=...``.
"""

import ml_collections

from configs import train_block

TINY_WIDTHS = dict(
    encoder_channels=(16, 16, 32, 64, 96, 128, 96, 64, 32),
    channel=32,
    hidden=64,
    num_blocks=2,
    num_heads=2,
    mlp_hidden=196,
    deform_groups=4,
    decoder_channels=(32, 16, 16),
)


def get_config(arg=None):
    variant = arg or "official"
    c = ml_collections.ConfigDict()
    c.task = "e2fgvi"
    c.seed = 2021
    c.parallel = "mesh"
    c.model = dict(
        name="e2fgvi",
        dtype="float32",
        param_dtype="float32",
        fix_backward_flow_idx=False,
        # widths: None = the official value (see peanut_jax.models.e2fgvi)
        encoder_channels=None,
        channel=None,
        hidden=None,
        num_blocks=None,
        num_heads=None,
        mlp_hidden=None,
        deform_groups=None,
        decoder_channels=None,
        split_grouped_convs=False,
        disc_nf=32,
        checkpoint="",  # official generator checkpoint to start from (fine-tuning)
        disc_checkpoint="",  # official discriminator checkpoint
        spynet_checkpoint="",  # pretrained SPyNet for update_spynet and the frozen flow-loss SPyNet
        spynet_zero_init=False,
        init="official",  # 'official' normal(0, 0.02) | 'fan_in' N(0, 1/fan_in) (small widths)
    )
    c.data = dict(
        source="tfds",  # 'tfds' | 'synthetic'
        batch_size=8,  # global
        height=240,
        width=432,
        num_local_frames=5,
        num_ref_frames=3,
        # tfds
        tfds_name="youtube_vos_inpainting/432x240",
        tfds_data_dir="",
        split="train",
        eval_split="test",
        random_flip=True,
        # synthetic
        video_length=20,
        num_objects=2,
        camera_speed=0.02,
        object_speed=(0.015, 0.04),
        camera_zoom=0.01,
        camera_rotation=0.01,
        mask_mode="mixed",
        eval_mask_mode="",
        object_mask_prob=0.5,
        mask_dilation=2,
        eval_clips=32,
        eval_batch_size=8,
        eval_seed=1000,
    )
    c.loss = dict(hole_weight=1.0, valid_weight=1.0, flow_weight=1.0, adversarial_weight=0.01, stc_weight=0.0)
    c.optim = dict(
        name="adam",
        lr=1e-4,
        b1=0.0,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.0,
        schedule="multistep",
        milestones=(400_000,),
        gamma=0.1,
        warmup_steps=0,
        min_lr=0.0,
        grad_clip_norm=0.0,
        spynet_lr_mult=1.0,
        disc_lr=None,
    )
    c.train = train_block(500_000)
    if variant == "official":
        pass
    elif variant == "hq":
        c.model.name = "e2fgvi_hq"
    elif variant == "synthetic":
        c.model.name = "e2fgvi_hq"
        c.data.source = "synthetic"
        c.loss.stc_weight = 1.0
    elif variant in ("tiny", "test"):
        c.seed = 0
        c.model.update(
            name="e2fgvi_hq", split_grouped_convs=True, disc_nf=8, spynet_zero_init=True, init="fan_in", **TINY_WIDTHS
        )
        c.data.update(
            source="synthetic",
            batch_size=4,
            height=60,
            width=108,
            num_local_frames=3,
            num_ref_frames=2,
            video_length=12,
            camera_speed=0.03,
            mask_mode="mixed",
            eval_clips=16,
            eval_batch_size=8,
        )
        # no GAN / flow loss on the CPU-sized run (see the module docstring); 'test' turns them on
        c.loss.update(stc_weight=0.5, adversarial_weight=0.0, flow_weight=0.0)
        c.optim.update(lr=1e-3, b1=0.9, milestones=(3000, 3400), gamma=0.3, grad_clip_norm=1.0)
        c.train.update(
            num_steps=3800, log_every=10, eval_every=100, checkpoint_every=100, prefetch=2, tensorboard=False
        )
        if variant == "test":
            c.data.update(batch_size=2, num_local_frames=2, num_ref_frames=1, eval_clips=4, eval_batch_size=4)
            c.loss.update(adversarial_weight=0.01, flow_weight=1.0)
            c.train.update(num_steps=4, log_every=2, eval_every=0, checkpoint_every=4, progress=False)
    else:
        raise ValueError(f"configs/e2fgvi.py: unknown variant {variant!r} (official, hq, synthetic, tiny, test)")
    return c.lock()
