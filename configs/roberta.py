"""RoBERTa masked-LM on the synthetic referring grammar: ``--config configs/roberta.py:<variant>``.

Variants (task: ``peanut_jax/train/tasks/roberta_mlm.py``: fairseq's masking and LM head, plus a
bag-of-words head on CLS):

``tiny``
    The text encoder of the ``tiny`` SAMWISE recipe (``models.samwise.config.TINY_TEST``: 4 layers of
    dim 32, 2 heads, FFN 64, the synthetic BPE's 408 ids) trained from scratch on
    ``peanut_jax.data.referring.grammar_sentences()``: batch 128, AdamW lr 1e-3 (weight decay 0.01),
    warm-up cosine over 3000 steps (about 3 minutes on one core).  ``configs/samwise.py:tiny`` reads
    it with ``--config.model.init_text=WORKDIR``.
``test``
    The unit-test size: batch 4, 2 steps.
"""

import ml_collections

from configs import train_block


def get_config(arg=None):
    variant = arg or "tiny"
    variants = ("tiny", "test")
    if variant not in variants:
        raise ValueError(f"configs/roberta.py: unknown variant {variant!r} ({', '.join(variants)})")
    c = ml_collections.ConfigDict()
    c.task = "roberta_mlm"
    c.seed = 0
    c.parallel = "mesh"
    # the text encoder inside SAMWISE tiny_test (TINY_TEST text_* fields, the synthetic BPE's vocabulary)
    c.model = dict(
        name="roberta_base",
        num_layers=4,
        dim=32,
        heads=2,
        ffn=64,
        vocab_size=408,
        max_positions=40,
        dtype="float32",
        param_dtype="float32",
    )
    c.data = dict(batch_size=128, max_tokens=16, eval_clips=256, eval_batch_size=128, eval_seed=1000)
    c.loss = dict(bow_weight=1.0)
    c.optim = dict(
        name="adamw",
        lr=1e-3,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.01,
        schedule="warmup_cosine",
        warmup_steps=200,
        min_lr=1e-5,
        grad_clip_norm=0.0,
    )
    c.train = train_block(3000, log_every=100, eval_every=1000, checkpoint_every=1000, prefetch=2, tensorboard=False)
    if variant == "test":
        c.data.update(batch_size=4, eval_clips=4, eval_batch_size=4)
        c.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2, progress=False)
    return c.lock()
