"""RoBERTa masked-LM pretraining on the synthetic referring grammar (``configs/roberta.py``).

The purpose: a pretrained text encoder for the ``tiny`` SAMWISE recipe, the way the released SAMWISE
starts from a pretrained (and frozen) RoBERTa-base.  No pretrained tiny RoBERTa exists, so
``configs/roberta.py:tiny`` trains the SAMWISE ``tiny_test`` text encoder from scratch on
:func:`peanut_jax.data.referring.grammar_sentences` with the synthetic BPE, and
``configs/samwise.py:tiny`` reads it with ``--config.model.init_text=WORKDIR``.

- Masked LM as fairseq RoBERTa: 15% of the real (non-special, non-pad) tokens of a sentence are
  selected (at least one); 80% of those become ``<mask>`` (the tokenizer's last id), 10% a random
  token, 10% stay; cross-entropy on the selected tokens through fairseq's LM head (dense, exact GELU,
  LayerNorm, output tied to the token embedding, bias).
- Not fairseq: a bag-of-words head on the ``<s>`` (CLS) state, a sigmoid BCE per vocabulary entry
  towards "this word occurs in the sentence" (``loss.bow_weight``).  SAMWISE's text prompt is
  ``project_text(CLS)``; masked-LM alone leaves CLS nearly the same for every sentence at this size
  (cosines 0.99+), the bag-of-words term makes it carry the sentence.
- Dropout on (``deterministic=False``) as in fairseq training.

``state.params`` is the encoder alone (a ``roberta_base``-family module, so the workdir loads with
``peanut_jax.load(workdir, "roberta")``); the two heads live in ``state.extra['heads']`` and train
with it.  Batches: ``input_ids`` (B, L) int32 (masked), ``padding_mask`` (B, L) bool, ``targets``
(B, L) int32 (the original ids), ``selected`` (B, L) float32.  Evaluation on ``data.eval_clips``
held-out maskings: masked-token accuracy, and the mean pairwise cosine of the CLS states of the
batch's sentences (1.0 = CLS says nothing about the sentence).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from peanut_jax.train import batching
from peanut_jax.train.config import build_configured
from peanut_jax.train.config import config_get as _get
from peanut_jax.train.state import TrainState, apply_updates, build_optimizer

NUM_SPECIAL = 4  # <s>, <pad>, </s>, <unk>


def make_model(config):
    return build_configured(config)


class Heads(nn.Module):
    """fairseq ``RobertaLMHead`` (output tied to ``embedding``) and the bag-of-words head on CLS."""

    dim: int
    vocab_size: int

    @nn.compact
    def __call__(self, states, embedding):
        x = nn.Dense(self.dim, name="dense")(states)
        x = nn.LayerNorm(epsilon=1e-5, name="layer_norm")(jax.nn.gelu(x, approximate=False))
        lm = x @ embedding.T + self.param("bias", nn.initializers.zeros, (self.vocab_size,))
        bow = nn.Dense(self.vocab_size, name="bow")(states[:, 0])
        return lm, bow


# ------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _corpus(max_tokens: int):
    from peanut_jax.data.referring import grammar_sentences, synthetic_tokenizer

    tok = synthetic_tokenizer()
    ids, pm = tok(grammar_sentences(), pad_to=int(max_tokens))
    return np.asarray(ids, np.int32), np.asarray(pm, bool), int(tok.vocab_size)


def mask_tokens(ids: np.ndarray, padding: np.ndarray, vocab_size: int, rng: np.random.Generator) -> dict:
    """fairseq's masking of one sentence (see the module docstring); ``<mask>`` = ``vocab_size - 1``."""
    real = (~padding) & (ids >= NUM_SPECIAL)
    sel = real & (rng.random(ids.shape) < 0.15)
    if not sel.any() and real.any():
        sel[rng.choice(np.flatnonzero(real))] = True
    r = rng.random(ids.shape)
    x = ids.copy()
    x[sel & (r < 0.8)] = vocab_size - 1
    rnd = sel & (r >= 0.8) & (r < 0.9)
    x[rnd] = rng.integers(NUM_SPECIAL, vocab_size - 1, int(rnd.sum()))
    return {"input_ids": x, "padding_mask": padding, "targets": ids, "selected": sel.astype(np.float32)}


def make_example(max_tokens: int, seed: tuple) -> dict:
    ids, pm, vocab = _corpus(max_tokens)
    rng = np.random.default_rng([*seed, 13])
    i = int(rng.integers(len(ids)))
    return mask_tokens(ids[i], pm[i], vocab, rng)


def train_batches(config, start_step: int, process_index: int, process_count: int):
    n = int(config.data.max_tokens)
    yield from batching.train_batches(
        config, start_step, process_index, process_count, lambda seed, _: make_example(n, seed)
    )


@functools.lru_cache(maxsize=4)
def _eval_set(max_tokens: int, n: int, seed: int) -> dict:
    return batching.stack([make_example(max_tokens, (seed, batching.EVAL_STREAM, i)) for i in range(n)])


def eval_batches(config, process_index: int, process_count: int):
    d = config.data
    n, eb = int(d.eval_clips), int(d.eval_batch_size)
    batching.check_eval_clips(n, eb)
    yield from batching.slices(_eval_set(int(d.max_tokens), n, int(d.eval_seed)), n, eb, process_index, process_count)


# ----------------------------------------------------------------------------------------- steps
def _heads(model) -> Heads:
    return Heads(model.dim, model.vocab_size)


def init_state(rng, config, sample_batch) -> TrainState:
    model = make_model(config)
    k_enc, k_heads, state_rng = jax.random.split(rng, 3)
    ids = jnp.asarray(sample_batch["input_ids"][:1])
    params = model.init(k_enc, ids)["params"]
    states = jnp.zeros((1, ids.shape[1], model.dim), jnp.float32)
    heads = _heads(model).init(k_heads, states, params["embed_tokens"]["embedding"])["params"]
    tx, _ = build_optimizer(config.optim, int(config.train.num_steps))
    both = {"encoder": params, "heads": heads}
    return TrainState.create(params=params, opt_state=tx.init(both), rng=state_rng, extra={"heads": heads})


def _forward(model, both, batch, rng=None):
    kw = {} if rng is None else {"deterministic": False, "rngs": {"dropout": rng}}
    states = model.apply({"params": both["encoder"]}, batch["input_ids"], batch["padding_mask"], **kw)
    lm, bow = _heads(model).apply({"params": both["heads"]}, states, both["encoder"]["embed_tokens"]["embedding"])
    return states, lm, bow


def losses(lm, bow, batch, vocab_size: int) -> dict:
    w = batch["selected"]
    ce = optax.softmax_cross_entropy_with_integer_labels(lm.astype(jnp.float32), batch["targets"])
    words = jnp.where((batch["targets"] >= NUM_SPECIAL) & ~batch["padding_mask"], batch["targets"], 0)
    present = jax.nn.one_hot(words, vocab_size).max(axis=1).at[:, 0].set(0.0)
    return {
        "loss_mlm": jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0),
        "loss_bow": jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(bow.astype(jnp.float32), present), -1)),
    }


def train_step(state: TrainState, batch, config, grad_reduce):
    model = make_model(config)
    tx, schedule = build_optimizer(config.optim, int(config.train.num_steps))
    bow_w = float(_get(config.loss, "bow_weight", 1.0))

    def loss_fn(both):
        _, lm, bow = _forward(model, both, batch, state.step_rng(0))
        terms = losses(lm, bow, batch, model.vocab_size)
        return terms["loss_mlm"] + bow_w * terms["loss_bow"], terms

    both = {"encoder": state.params, "heads": state.extra["heads"]}
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(both)
    grads = grad_reduce(grads)
    new, opt_state = apply_updates(tx, grads, state.opt_state, both)
    state = state.replace(params=new["encoder"], opt_state=opt_state, extra={"heads": new["heads"]})
    return state, {"loss": loss, **terms, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}


def eval_step(state: TrainState, batch, config):
    model = make_model(config)
    states, lm, _ = _forward(model, {"encoder": state.params, "heads": state.extra["heads"]}, batch)
    w = batch["selected"]
    hit = (jnp.argmax(lm, -1) == batch["targets"]).astype(jnp.float32)
    cls = states[:, 0].astype(jnp.float32)
    cls = cls / jnp.maximum(jnp.linalg.norm(cls, axis=-1, keepdims=True), 1e-12)
    b = cls.shape[0]
    cos = (jnp.sum(cls @ cls.T) - b) / max(b * (b - 1), 1)
    return {"mlm_accuracy": jnp.sum(hit * w) / jnp.maximum(jnp.sum(w), 1.0), "cls_cosine": cos}


def describe(config) -> str:
    m = config.model
    return (
        f"RoBERTa ({m.num_layers} layers, dim {m.dim}) masked-LM + bag-of-words on the synthetic grammar, "
        f"batch {config.data.batch_size}"
    )
