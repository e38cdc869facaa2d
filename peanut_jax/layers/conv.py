"""Convolutions that pad like torch, NHWC.

Parameters are ``kernel`` (kh, kw, Cin/groups, Cout) and ``bias`` (Cout,); a torch Conv2d weight
(Cout, Cin/g, kh, kw) converts with ``w.transpose(2, 3, 1, 0)``.  ``ConvTranspose2d`` stores its
kernel as (kh, kw, Cin, Cout) = torch (Cin, Cout, kh, kw) ``.transpose(2, 3, 0, 1)``.
Initialisers default to torch's (kaiming-uniform a=sqrt(5): U(±1/sqrt(fan_in)) for weight and bias)
so that models trained from scratch behave like the official ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from peanut_jax.ops.patches import pair

Dtype = Any


def torch_uniform(fan_in: int) -> Callable:
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def leaky_relu(x, negative_slope: float):
    """torch ``LeakyReLU``; the slope is always explicit (jax's default 0.01 rarely matches)."""
    return jnp.where(x >= 0, x, x * negative_slope)


class Conv2d(nn.Module):
    """torch ``nn.Conv2d`` (symmetric explicit padding, groups, dilation) in NHWC."""

    features: int
    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: int | Sequence[int] = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable | None = None
    bias_init: Callable | None = None
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        kh, kw = pair(self.kernel_size)
        cin = x.shape[-1]
        if cin % self.groups:
            raise ValueError(f"{self.name}: {cin} input channels not divisible by groups={self.groups}")
        fan_in = cin // self.groups * kh * kw
        k_init = self.kernel_init or torch_uniform(fan_in)
        kernel = self.param("kernel", k_init, (kh, kw, cin // self.groups, self.features), self.param_dtype)
        ph, pw = pair(self.padding)
        y = lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            pair(self.stride),
            ((ph, ph), (pw, pw)),
            rhs_dilation=pair(self.dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
            precision=self.precision,
        )
        if self.use_bias:
            b_init = self.bias_init or torch_uniform(fan_in)
            bias = self.param("bias", b_init, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class ConvTranspose2d(nn.Module):
    """torch ``nn.ConvTranspose2d`` (padding, output_padding) in NHWC, groups = 1."""

    features: int
    kernel_size: int | Sequence[int] = 4
    stride: int | Sequence[int] = 2
    padding: int | Sequence[int] = 1
    output_padding: int | Sequence[int] = 0
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable | None = None
    bias_init: Callable | None = None
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        kh, kw = pair(self.kernel_size)
        cin = x.shape[-1]
        # torch computes fan_in from weight.size(1) * k*k = Cout * kh * kw for transposed convs
        fan_in = self.features * kh * kw
        k_init = self.kernel_init or torch_uniform(fan_in)
        kernel = self.param("kernel", k_init, (kh, kw, cin, self.features), self.param_dtype)
        ph, pw = pair(self.padding)
        oph, opw = pair(self.output_padding)
        # transposed conv = dilated-input conv with the spatially flipped kernel
        k = kernel[::-1, ::-1].astype(self.dtype)
        y = lax.conv_general_dilated(
            x.astype(self.dtype),
            k,
            (1, 1),
            ((kh - 1 - ph, kh - 1 - ph + oph), (kw - 1 - pw, kw - 1 - pw + opw)),
            lhs_dilation=pair(self.stride),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        if self.use_bias:
            b_init = self.bias_init or torch_uniform(fan_in)
            bias = self.param("bias", b_init, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class PReLU(nn.Module):
    """torch ``nn.PReLU(num_parameters)``: one slope per channel (Flax's ``nn.PReLU`` has one scalar)."""

    num_parameters: int = 1
    init_value: float = 0.25
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        a = self.param("weight", nn.initializers.constant(self.init_value), (self.num_parameters,), self.param_dtype)
        return jnp.where(x >= 0, x, x * a.astype(x.dtype))
