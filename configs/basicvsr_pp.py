"""BasicVSR++ x4 video super-resolution: ``--config configs/basicvsr_pp.py:<variant>``.

Variants:

``official`` (= ``reds``)
    mmagic ``basicvsr-pp_c64n7_8xb1-600k_reds4.py``: c64n7, REDS (``reds_vsr/bi`` TFDS build in
    ``--config.data.tfds_data_dir``), 30-frame clips of 64x64 LR patches (GT 256) with flips and
    transpose, batch 8 (8 GPUs x 1), Charbonnier loss, Adam 1e-4 (beta 0.9/0.99), SPyNet x0.25 and
    frozen for 5000 iterations, CosineRestart (periods [600000], weights [1], eta_min 1e-7) over
    600k iterations; evaluation on REDS4 (RGB).  Set ``--config.model.spynet_pretrained`` to the
    official ``spynet_20210409-c6c1bd09.pth`` (the official recipe starts from it).
``vimeo_bi`` / ``vimeo_bd``
    mmagic ``basicvsr-pp_c64n7_4xb2-300k_vimeo90k-{bi,bd}.py``: Vimeo-90K septuplets
    (``vimeo90k_septuplet/{bi,bd}``), 7 frames mirrored to 14 (``MirrorSequence``), batch 8 (4 x 2),
    300k iterations, SPyNet never frozen (``fix_iter=-1``), CosineRestart (periods [300000]);
    evaluation on Vimeo-90K-T (Y channel).
``tiny``
    CPU smoke run that visibly learns: c16n1 with 16 full-resolution channels (``hr_channels``,
    official 64), unrolled recurrence (``use_scan=False``: faster to compile on CPU), synthetic
    clips of 5 frames, 64x64 LR (SPyNet's minimum) -> 256x256 GT, BI degradation, batch 1, SPyNet
    zero-initialised (predicts zero flow) and frozen for the run, lr 1e-3, 700 steps (about 30
    CPU minutes); evaluation on 4 held-out synthetic clips against MATLAB bicubic (measured: 32.06
    dB vs 31.51 dB, SSIM 0.950 vs 0.941; it passes bicubic between 400 and 500 steps).
``test``
    The unit-test size: ``tiny`` with 3-frame clips and a few steps.

Every key can be overridden: ``--config.data.tfds_data_dir=/data/tfds --config.optim.lr=2e-4``.
"""

import ml_collections

from configs import train_block


def get_config(arg=None):
    variant = arg or "official"
    c = ml_collections.ConfigDict()
    c.task = "basicvsr_pp"
    c.seed = 0
    c.parallel = "mesh"
    c.model = dict(
        mid_channels=64,
        num_blocks=7,
        max_residue_magnitude=10.0,
        scale=4,
        is_low_res_input=True,
        hr_channels=64,  # official: 64 (upsample2 / conv_hr width)
        use_scan=True,
        dtype="float32",
        param_dtype="float32",
        spynet_pretrained="",  # official mmagic SPyNet checkpoint (spynet_20210409-c6c1bd09.pth)
        init_checkpoint="",  # a whole BasicVSR++ checkpoint to fine-tune (mmagic load_from)
        zero_init_spynet_flow=False,  # zero SPyNet's last convs (zero flow) when nothing is loaded
    )
    c.data = dict(
        source="reds",  # 'reds' | 'vimeo90k' | 'synthetic'
        tfds_data_dir="",  # where reds_vsr / vimeo90k_septuplet were built
        tfds_config="",  # builder config; default: data.degradation lower-cased
        degradation="BI",  # 'BI' (MATLAB bicubic) | 'BD' (blur-downsample)
        train_split="train",
        eval_split="reds4",
        batch_size=8,  # global batch (8 GPUs x 1)
        num_frames=30,
        lq_size=64,  # 30-frame clips of 64x64 LR patches (GT 256)
        flip=True,
        transpose=True,
        mirror_sequence=False,
        crop_border=0,  # mmagic's PSNR/SSIM default
        eval_batch_size=1,
        eval_clips=0,  # 0: the whole evaluation split
        eval_num_frames=0,  # REDS4: frames per clip (0 = all 100)
        eval_lq_size=0,  # centre-crop evaluation LR frames to this size (0 = full frames)
        # synthetic scenes (data.source='synthetic'); speeds are fractions of the frame side
        num_objects=3,
        camera_speed=0.01,
        object_speed=(0.005, 0.02),
        camera_zoom=0.005,
        camera_rotation=0.005,
        eval_seed=1000,
    )
    c.optim = dict(
        name="adam",
        lr=1e-4,
        b1=0.9,
        b2=0.99,
        eps=1e-8,
        grad_clip_norm=0.0,
        schedule="cosine_restarts",
        periods=(600_000,),
        restart_weights=(1.0,),
        min_lr=1e-7,
        warmup_steps=0,
        spynet_lr_mult=0.25,
        fix_iter=5000,
        skip_frozen_backward=True,
    )
    c.train = train_block(600_000, eval_at_start=False)
    if variant in ("official", "reds"):
        pass
    elif variant in ("vimeo_bi", "vimeo_bd"):
        kind = variant[-2:].upper()
        c.data.update(
            source="vimeo90k", degradation=kind, num_frames=7, mirror_sequence=True, eval_split="test", eval_clips=0
        )
        c.optim.update(periods=(300_000,), fix_iter=-1)
        c.train.update(num_steps=300_000)
    elif variant in ("tiny", "test"):
        # hr_channels 16: the two full-resolution 64-channel convs dominate a CPU step otherwise;
        # use_scan False: XLA:CPU compiles the unrolled recurrence much faster than the scanned one
        c.model.update(mid_channels=16, num_blocks=1, hr_channels=16, use_scan=False, zero_init_spynet_flow=True)
        c.data.update(source="synthetic", batch_size=1, num_frames=5, lq_size=64, eval_clips=4, eval_batch_size=2)
        c.optim.update(lr=1e-3, schedule="constant", fix_iter=1_000_000)  # SPyNet frozen throughout
        c.train.update(
            num_steps=700, log_every=10, eval_every=100, checkpoint_every=100, prefetch=2, eval_at_start=True
        )
        if variant == "test":
            c.data.update(num_frames=3, eval_clips=2, eval_batch_size=2)
            c.train.update(
                num_steps=3,
                log_every=1,
                eval_every=0,
                checkpoint_every=3,
                progress=False,
                tensorboard=False,
                eval_at_start=False,
            )
    else:
        raise ValueError(
            f"configs/basicvsr_pp.py: unknown variant {variant!r} (official, reds, vimeo_bi, vimeo_bd, tiny, test)"
        )
    return c.lock()
