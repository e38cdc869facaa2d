"""VGG19 perceptual loss of RIFE ``model/loss.py`` ``VGGPerceptualLoss`` (NHWC, pure function).

Both images are normalised with the ImageNet mean/std (the official ``MeanShift``), run through
torchvision's ``vgg19().features[0..29]`` (:class:`peanut_jax.models.vgg.VGG19Features`, frozen),
and after feature indices 1, 6, 11, 20, 29 (relu1_1 .. relu5_1; the official ``(i+1) in
[2, 7, 12, 21, 30]``) ``weight_k * mean|X - sg(Y)| * 0.1`` is accumulated with weights
``[1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5]``.

Parameters come from ``peanut_jax.convert.from_official('vgg19', 'vgg19-dcbb9e9d.pth')``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from peanut_jax.models.vgg import VGG19Features, imagenet_normalize

__all__ = ["PERCEPTUAL_LAYERS", "PERCEPTUAL_SCALE", "PERCEPTUAL_WEIGHTS", "perceptual_loss"]

PERCEPTUAL_LAYERS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
PERCEPTUAL_WEIGHTS = (1.0 / 2.6, 1.0 / 4.8, 1.0 / 3.7, 1.0 / 5.6, 10 / 1.5)
PERCEPTUAL_SCALE = 0.1


def perceptual_loss(
    vgg_params,
    pred: jax.Array,
    target: jax.Array,
    *,
    layers: Sequence[int] = PERCEPTUAL_LAYERS,
    weights: Sequence[float] = PERCEPTUAL_WEIGHTS,
    scale: float = PERCEPTUAL_SCALE,
    dtype: Any = jnp.float32,
    precision: Any = None,
) -> jax.Array:
    """RIFE's VGG perceptual loss between ``pred`` and ``target`` (N, H, W, 3) RGB in [0, 1].

    ``vgg_params`` is the ``params`` collection of :class:`VGG19Features` (or the whole variables
    dict).  The network is frozen (no gradient to its parameters) and ``target`` receives no
    gradient (the official ``Y.detach()``).  ``dtype`` sets the VGG compute dtype (float32 for parity).
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(
            f"perceptual_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be the "
            f"same (N, H, W, 3) shape"
        )
    if len(layers) != len(weights):
        raise ValueError(f"perceptual_loss: {len(layers)} layers but {len(weights)} weights")
    params = vgg_params["params"] if "params" in vgg_params else vgg_params
    return _perceptual(
        params,
        pred,
        target,
        tuple(int(i) for i in layers),
        tuple(float(w) for w in weights),
        float(scale),
        dtype,
        precision,
    )


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _perceptual(params, pred, target, layers, weights, scale, dtype, precision):
    params = lax.stop_gradient(params)
    n = pred.shape[0]
    x = imagenet_normalize(jnp.concatenate([pred, lax.stop_gradient(target)], axis=0))
    feats = VGG19Features(dtype=dtype, precision=precision).apply({"params": params}, x, layers=tuple(layers))
    loss = 0.0
    for w, f in zip(weights, feats):
        f = f.astype(jnp.float32)
        loss = loss + w * jnp.mean(jnp.abs(f[:n] - lax.stop_gradient(f[n:]))) * scale
    return loss
