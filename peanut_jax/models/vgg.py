"""torchvision ``vgg19().features`` in Flax (NHWC), for the perceptual loss.

The 37 feature layers keep torchvision's indices: a 3x3 conv (padding 1) at
0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34, each followed by a ReLU at the next
index, and MaxPool2d(2, 2) (floor mode) at 4, 9, 18, 27, 36.  Parameters are ``conv_{index}``
with ``kernel`` (3, 3, Cin, Cout) and ``bias``; :mod:`peanut_jax.convert.vgg` maps torchvision's
``features.{index}.{weight,bias}`` onto them.

Input: (N, H, W, 3) RGB already normalised with the ImageNet mean/std, as torchvision expects
(:func:`imagenet_normalize`).  ``module.apply(variables, x, layers=(1, 6, 11, 20, 29))`` returns a
tuple with the activation after each listed feature index (ReLU outputs are post-activation) and
stops after the largest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from peanut_jax.layers import Conv2d

__all__ = ["CONV_INDICES", "LAYER_NAMES", "POOL_INDICES", "VGG19Features", "imagenet_normalize", "vgg19_layers"]

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision cfg "E": channel counts, 'M' = max pool
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def vgg19_layers() -> tuple[tuple[str, int], ...]:
    """The torchvision feature layers in order: ('conv', Cout) / ('relu', 0) / ('pool', 0)."""
    out = []
    for v in _CFG:
        if v == "M":
            out.append(("pool", 0))
        else:
            out.extend([("conv", v), ("relu", 0)])
    return tuple(out)


_LAYERS = vgg19_layers()
CONV_INDICES = tuple(i for i, (k, _) in enumerate(_LAYERS) if k == "conv")
POOL_INDICES = tuple(i for i, (k, _) in enumerate(_LAYERS) if k == "pool")


def _layer_names() -> dict[str, int]:
    names, block, n = {}, 1, 1
    for i, (kind, _) in enumerate(_LAYERS):
        if kind == "conv":
            names[f"conv{block}_{n}"] = i
        elif kind == "relu":
            names[f"relu{block}_{n}"] = i
            n += 1
        else:
            names[f"pool{block}"] = i
            block, n = block + 1, 1
    return names


LAYER_NAMES = _layer_names()  # e.g. 'relu1_1' -> 1, 'relu5_1' -> 29, 'relu5_4' -> 35


def imagenet_normalize(x: jax.Array) -> jax.Array:
    """``(x - mean) / std`` with the ImageNet statistics, x RGB in [0, 1] (..., 3)."""
    mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
    std = jnp.asarray(IMAGENET_STD, x.dtype)
    return (x - mean) / std


def _max_pool_2x2(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGG19Features(nn.Module):
    """torchvision ``vgg19().features`` (layers 0..36), NHWC; see the module docstring."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, layers: Sequence[int | str] = (35,)) -> tuple[jax.Array, ...]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"VGG19Features: input must be (N, H, W, 3), got shape {tuple(x.shape)}")
        idx = []
        for layer in layers:
            if isinstance(layer, str):
                if layer not in LAYER_NAMES:
                    raise ValueError(f"VGG19Features: unknown layer name {layer!r}; known: {', '.join(LAYER_NAMES)}")
                layer = LAYER_NAMES[layer]
            if not 0 <= int(layer) < len(_LAYERS):
                raise ValueError(f"VGG19Features: layer index {layer} outside 0..{len(_LAYERS) - 1}")
            idx.append(int(layer))
        if not idx:
            raise ValueError("VGG19Features: layers must name at least one feature index")
        wanted = set(idx)
        last = max(idx)
        got = {}
        h = x.astype(self.dtype)
        for i, (kind, cout) in enumerate(_LAYERS[: last + 1]):
            if kind == "conv":
                h = Conv2d(
                    cout,
                    3,
                    padding=1,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    precision=self.precision,
                    name=f"conv_{i}",
                )(h)
            elif kind == "relu":
                h = jax.nn.relu(h)
            else:
                h = _max_pool_2x2(h)
            if i in wanted:
                got[i] = h
        return tuple(got[i] for i in idx)
