"""``nn.Dense`` and ``nn.LayerNorm`` configured like their torch counterparts.

``linear(features, fan_in)``: torch ``nn.Linear`` initialisation (weight and bias U(+-1/sqrt(fan_in)));
parameters ``kernel`` (in, out) = torch ``weight.T`` and ``bias``.
``layer_norm(eps)``: torch ``LayerNorm`` over the last axis (also SAM's ``LayerNorm2d`` on NHWC maps),
two-pass variance like torch (``use_fast_variance=False``); parameters ``scale`` and ``bias``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from peanut_jax.layers.conv import torch_uniform

Dtype = Any


def linear(
    features: int,
    fan_in: int,
    *,
    name: str | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    precision: Any = None,
    use_bias: bool = True,
) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=torch_uniform(fan_in),
        bias_init=torch_uniform(fan_in),
        name=name,
    )


def layer_norm(
    eps: float = 1e-5, *, name: str | None = None, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32
) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)
