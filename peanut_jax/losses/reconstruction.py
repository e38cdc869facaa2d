"""Pixel reconstruction losses (NHWC, pure jnp, jit/grad friendly).

- :func:`l1_loss`: mean absolute error (torch ``nn.L1Loss()``).
- :func:`hole_loss` / :func:`valid_loss`: E2FGVI's masked L1 terms, each normalised by the mean of
  its mask (``core/trainer.py``: ``L1(pred*m, gt*m) / mean(m)`` and the same with ``1 - m``).
- :func:`charbonnier_loss`: mmagic's ``CharbonnierLoss`` (BasicVSR++): ``mean(sqrt((x-y)^2 + eps))``.
- :func:`laplacian_loss`: RIFE's ``LapLoss`` (``model/laplacian.py``): L1 between the band-pass
  levels of two Laplacian pyramids built with the 5x5 binomial kernel and reflect padding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "charbonnier_loss",
    "gauss_kernel",
    "hole_loss",
    "l1_loss",
    "laplacian_loss",
    "laplacian_pyramid",
    "valid_loss",
]


def _check_same_shape(fn: str, pred, target) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{fn}: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """``mean(|pred - target|)`` over every element (torch ``F.l1_loss``, reduction ``'mean'``)."""
    _check_same_shape("l1_loss", pred, target)
    return jnp.mean(jnp.abs(pred - target))


def _masked_l1(fn: str, pred, target, weight) -> jax.Array:
    _check_same_shape(fn, pred, target)
    try:
        jnp.broadcast_shapes(weight.shape, pred.shape)
    except ValueError:
        raise ValueError(f"{fn}: mask {tuple(weight.shape)} does not broadcast to pred {tuple(pred.shape)}") from None
    num = jnp.mean(jnp.abs(pred * weight - target * weight))
    den = jnp.mean(weight)
    # E2FGVI divides unconditionally (an empty mask gives 0/0 = NaN); the numerator is then 0 too,
    # so we return 0 instead, with a finite gradient.
    safe = jnp.where(den > 0, den, 1.0)
    return jnp.where(den > 0, num / safe, 0.0)


def hole_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """E2FGVI hole loss: ``mean(|pred*m - target*m|) / mean(m)``.

    ``pred``/``target`` (..., H, W, C); ``mask`` 1 inside the hole, broadcastable to ``pred``
    (typically (..., H, W, 1)).  The numerator is averaged over the broadcast (image-sized) tensor,
    the denominator over the mask tensor itself, as in the official trainer.  Images in any range
    (E2FGVI trains in [-1, 1]).
    """
    mask = jnp.asarray(mask, pred.dtype)
    return _masked_l1("hole_loss", pred, target, mask)


def valid_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """E2FGVI valid loss: ``mean(|pred*(1-m) - target*(1-m)|) / mean(1-m)`` (``mask`` = 1 in the hole)."""
    mask = jnp.asarray(mask, pred.dtype)
    return _masked_l1("valid_loss", pred, target, 1.0 - mask)


def charbonnier_loss(pred: jax.Array, target: jax.Array, eps: float = 1e-12, reduction: str = "mean") -> jax.Array:
    """mmagic ``CharbonnierLoss``: ``sqrt((pred - target)^2 + eps)``, reduced by ``'mean'``/``'sum'``/``'none'``."""
    _check_same_shape("charbonnier_loss", pred, target)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"charbonnier_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    err = jnp.sqrt(jnp.square(pred - target) + eps)
    if reduction == "mean":
        return jnp.mean(err)
    if reduction == "sum":
        return jnp.sum(err)
    return err


# --------------------------------------------------------------------------- Laplacian pyramid
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0])


def gauss_kernel() -> np.ndarray:
    """RIFE's 5x5 Gaussian kernel: ``[1,4,6,4,1]^T [1,4,6,4,1] / 256`` (float32, (5, 5))."""
    return (np.outer(_BINOMIAL, _BINOMIAL) / 256.0).astype(np.float32)


def _conv_gauss(x: jax.Array, scale: float = 1.0) -> jax.Array:
    """Reflect-pad by 2 (no edge repeat, = torch ``'reflect'``) and filter each channel with the kernel."""
    c = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    k = jnp.asarray(gauss_kernel() * scale, x.dtype)
    k = jnp.broadcast_to(k[:, :, None, None], (5, 5, 1, c))
    return lax.conv_general_dilated(
        xp,
        k,
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )


def _upsample(x: jax.Array) -> jax.Array:
    """Zero insertion (values at even positions) followed by the Gaussian filter times 4."""
    n, h, w, c = x.shape
    up = jnp.zeros((n, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2, :].set(x)
    return _conv_gauss(up, 4.0)


def _check_pyramid(fn: str, shape, max_levels: int) -> None:
    if len(shape) != 4:
        raise ValueError(f"{fn}: expected (N, H, W, C) images, got shape {tuple(shape)}")
    if max_levels < 1:
        raise ValueError(f"{fn}: max_levels must be >= 1, got {max_levels}")
    h, w = shape[1], shape[2]
    div = 2**max_levels
    if h % div or w % div:
        raise ValueError(
            f"{fn}: H and W must be divisible by 2**max_levels = {div} for {max_levels} levels; "
            f"got H={h}, W={w} (pad or crop the images)"
        )
    if min(h, w) < 2 * div:
        # the coarsest upsample reflect-pads an image of size 2 * H / 2**L by 2, which needs >= 3 pixels
        raise ValueError(
            f"{fn}: H and W must be at least 2**(max_levels+1) = {2 * div} for {max_levels} levels; got H={h}, W={w}"
        )


def laplacian_pyramid(img: jax.Array, max_levels: int = 5) -> list[jax.Array]:
    """The ``max_levels`` band-pass levels ``cur - up(down(gauss(cur)))`` (no low-pass residual).

    ``img`` (N, H, W, C) with H, W divisible by ``2**max_levels`` and at least ``2**(max_levels+1)``.
    """
    _check_pyramid("laplacian_pyramid", img.shape, max_levels)
    return _pyramid(img, max_levels)


@functools.partial(jax.jit, static_argnums=1)
def _pyramid(img, max_levels):
    cur = img
    pyr = []
    for _ in range(max_levels):
        down = _conv_gauss(cur)[:, ::2, ::2, :]
        pyr.append(cur - _upsample(down))
        cur = down
    return pyr


def laplacian_loss(pred: jax.Array, target: jax.Array, max_levels: int = 5) -> jax.Array:
    """RIFE ``LapLoss``: ``sum over levels of mean|pyr(pred) - pyr(target)|`` (NHWC, any channel count).

    The official default is 5 levels, so H and W must be multiples of 32 (and >= 64).
    """
    _check_same_shape("laplacian_loss", pred, target)
    _check_pyramid("laplacian_loss", pred.shape, max_levels)
    return _laplacian_loss(pred, target, int(max_levels))


@functools.partial(jax.jit, static_argnums=2)
def _laplacian_loss(pred, target, max_levels):
    # one pyramid over the concatenated batch: the same arithmetic as two separate pyramids
    n = pred.shape[0]
    pyr = _pyramid(jnp.concatenate([pred, target], axis=0), max_levels)
    return sum(jnp.mean(jnp.abs(p[:n] - p[n:])) for p in pyr)
