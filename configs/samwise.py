"""SAMWISE text-prompted video segmentation: ``--config configs/samwise.py:<variant>``.

Variants (official facts: SAMWISE ``opts.py``, ``main.py``, ``main_pretrain.py``, ``engine.py``,
``docs/training-and-inference.md``; ``shared/reference/sam2_samwise.md`` B.7):

``official_pretrain``
    ``main_pretrain.py --lr 1e-4 --clip_max_norm 0.1 --batch_size 32 --num_frames 1 --epochs 6
    --disable_pred_obj_score`` on RefCOCO + RefCOCO+ + RefCOCOg: SAM 2 v1.0 Hiera-B+ and RoBERTa-base
    frozen (``model.init_sam2`` / ``model.init_text``), no HSA, no CME, object-score head off.
``official_ytvos``
    ``main.py --resume=pretrain/pretrained_model.pth --dataset_file ytvos --HSA --use_cme_head
    --epochs 4 --batch_size 4``: from the pretrained model (``model.init_from``), 8-frame clips with
    SAMWISE's local sampling, lr 1e-5 (default), clip norm 1 (default).
``official_mevis``
    The same on MeViS (``--dataset_file mevis --epochs 1``; MeViS clips use the global sampling).
``tiny``
    CPU recipe on :func:`peanut_jax.data.referring.referring_clip` (4 frames of 128x128, 3 objects
    with distractors, the synthetic BPE tokenizer) with the ``tiny_test`` model sizes, in two runs::

        python train.py --config configs/roberta.py:tiny --workdir runs/text_tiny
        python train.py --config configs/samwise.py:tiny --workdir runs/samwise_tiny \
            --config.model.init_text=runs/text_tiny

    The first pretrains the text encoder (masked LM + a bag-of-words head on CLS, the counterpart
    of the pretrained RoBERTa the released SAMWISE starts from); the second freezes it and trains
    everything else (``model.trainable='no_text'``: no pretrained tiny SAM 2 exists; without
    ``init_text`` the run is refused).  Each batch holds 2 clips x their 3 objects
    (``data.objects_per_clip=3``: with one expression per clip the model never learns to read the
    sentence), AdamW lr 1e-3 with a 200-step warm-up and a cosine decay over 6000 steps.  Further
    deviations: the object-score head is off (``model.pred_obj_scores=False``: no loss trains it);
    4-frame clips leave the CME idle.  ``configs/sam2.py:tiny`` can pretrain the SAM 2 part
    (``--config.model.init_sam2=WORKDIR``; not part of the recipe yet).
``test``
    The unit-test size: 2-clip batches of one expression each, all parameters trainable, a few
    steps.

Official recipe, common to the three: only parameters whose name contains ``adapter``,
``conditional_memory_encoder`` or ``project_text`` train (``model.trainable='official'``);
AdamW, weight decay 0, ``MultiStepLR([60000])`` stepped every iteration (a x0.1 drop at step 60,000),
gradients clipped by global norm; loss = focal + dice (+ the CME cross-entropy with class weights
[1, 2]); ``model.train()`` semantics (dropout, BatchNorm batch statistics, see the task docstring).

Batch sizes: SAMWISE's ``--batch_size`` is the GLOBAL batch (``main.py`` divides it by the number
of GPUs: ``args.batch_size = int(args.batch_size / args.ngpu)``), and ``data.batch_size`` here is the
global batch too: 32 images (pretraining) and 4 clips of 8 frames (fine-tuning).

Steps: the official runs stop after a number of epochs (6 / 4 / 1) of their dataset; ``train.num_steps``
must be ``epochs * items // batch_size`` of your copy of the data.  ``official_pretrain`` uses
6 x (321,327 // 32) = 60,246 from the published train-split sizes (RefCOCO 120,624 + RefCOCO+ 120,191
+ RefCOCOg-umd 80,512 expressions; that the official sampler draws one item per expression is
inferred, not checked).  The video variants default to 60,000 steps (the lr-drop milestone), to be
set with ``--config.train.num_steps`` from the clip count of the data:
``python -m peanut_jax.data.rvos_clips ref_youtube_vos DATA_DIR`` prints the item count and
``epochs * items // batch_size``, and the task logs a warning naming that value when
``train.num_steps`` differs.  ``data.data_dir`` is the TFDS folder the builders of
``peanut_jax.data.tfds`` (``rvos.build``) wrote; clips are sampled by ``peanut_jax.data.rvos_clips``.

Every key can be overridden: ``--config.optim.lr=3e-5 --config.data.batch_size=8``.
"""

import ml_collections

from configs import train_block
from peanut_jax.models.samwise.config import TINY_TEST

PRETRAIN_STEPS = 6 * (321_327 // 32)
# the tiny_test model sizes (peanut_jax.models.samwise.config.TINY_TEST) with the synthetic tokenizer's
# vocabulary (peanut_jax/assets/synthetic_bpe: 408 ids)
TINY_MODEL = dict(TINY_TEST, vocab_size=408)


def get_config(arg=None):
    variant = arg or "official_ytvos"
    variants = ("official_pretrain", "official_ytvos", "official_mevis", "tiny", "test")
    if variant not in variants:
        raise ValueError(f"configs/samwise.py: unknown variant {variant!r} ({', '.join(variants)})")
    c = ml_collections.ConfigDict()
    c.task = "samwise"
    c.seed = 0
    c.parallel = "mesh"
    c.model = dict(
        name="samwise",
        sam2_size="base_plus",
        hsa=True,
        use_cme=True,
        pred_obj_scores=True,
        trainable="official",  # 'official' (adapters, CME, project_text) | 'all'
        init_from="samwise_refcoco",  # the pretrained SAMWISE (registry name, file or workdir)
        init_sam2="",  # official_pretrain: SAM 2 v1.0 weights for `sam`
        init_text="",  # official_pretrain: RoBERTa-base weights for `text_encoder`
        hiera_per_frame=True,
        dtype="float32",
        param_dtype="float32",
    )
    c.data = dict(
        source="ref_youtube_vos",  # 'synthetic' | 'ref_youtube_vos' | 'mevis' | 'refcoco'
        data_dir="",  # TFDS data_dir of the official builders
        train_split="train",
        eval_split="valid",
        sampling="local",  # official clip sampling: 'local' (Ref-YouTube-VOS) | 'global' (MeViS)
        epochs=4,
        max_size=1024,  # frames resized so that the longer side is max_size (no augmentation)
        batch_size=4,  # global
        num_frames=8,
        height=1024,
        width=1024,
        num_objects=3,
        distractors=True,
        objects_per_clip=1,  # synthetic: batch rows in groups of k on one clip, each another object
        max_tokens=32,
        eval_clips=0,
        eval_batch_size=4,
        eval_seed=1000,
    )
    c.optim = dict(
        name="adamw",
        lr=1e-5,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        schedule="multistep",
        milestones=(60_000,),
        gamma=0.1,
        warmup_steps=0,  # linear warm-up from 0 (schedules: peanut_jax.train.state.build_schedule)
        min_lr=0.0,  # the end of 'cosine' / 'warmup_cosine'
        grad_clip_norm=1.0,
    )
    c.train = train_block(60_000)
    if variant == "official_pretrain":
        c.model.update(hsa=False, use_cme=False, pred_obj_scores=False, init_from="")
        c.model.update(init_sam2="sam2_hiera_base_plus", init_text="roberta_base")
        c.data.update(source="refcoco", num_frames=1, batch_size=32, epochs=6, eval_split="val")
        c.optim.update(lr=1e-4, grad_clip_norm=0.1)
        c.train.update(num_steps=PRETRAIN_STEPS)
    elif variant == "official_mevis":
        c.data.update(source="mevis", sampling="global", epochs=1, eval_split="valid_u")
    elif variant in ("tiny", "test"):
        c.model.update(TINY_MODEL, trainable="all", init_from="", hiera_per_frame=False)
        c.data.update(
            source="synthetic",
            height=128,
            width=128,
            max_size=128,
            max_tokens=16,
            epochs=0,
            eval_clips=64,
            eval_batch_size=8,
        )
        c.optim.update(lr=1e-3, milestones=(), grad_clip_norm=1.0)
        c.train.update(
            num_steps=1500, log_every=25, eval_every=500, checkpoint_every=500, prefetch=2, tensorboard=False
        )
        if variant == "tiny":
            # 4-frame clips (half the cost of 8; the CME needs frames f > cme_window=4, so it does not run)
            # and no object-score gating: the mask losses do not train the object-score head, and a
            # randomly initialised one masks every evaluation prediction out (J stays at its empty-clip value)
            c.model.update(pred_obj_scores=False, trainable="no_text")
            c.data.update(num_frames=4, eval_clips=32, batch_size=6, objects_per_clip=3)
            c.optim.update(schedule="warmup_cosine", warmup_steps=200, min_lr=1e-5)
            c.train.update(num_steps=6000, log_every=10, eval_every=1000, checkpoint_every=1000)
        if variant == "test":
            c.data.update(batch_size=2, eval_clips=4, eval_batch_size=2)
            c.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2, progress=False)
    return c.lock()
