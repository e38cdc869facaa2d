"""3D convolution (torch ``nn.Conv3d`` padding) with optional spectral normalisation, NDHWC.

Spectral normalisation follows ``torch.nn.utils.spectral_norm`` (and E2FGVI's copy of it) exactly:

* the stored weight is ``weight_orig`` (our param ``kernel``, layout (kt, kh, kw, Cin, Cout));
  its matrix is the torch weight (Cout, Cin, kt, kh, kw) reshaped to (Cout, Cin*kt*kh*kw);
* the power-iteration vectors ``u`` (Cout,) and ``v`` (Cin*kt*kh*kw,) live in the ``'spectral'``
  collection (torch buffers ``weight_u`` / ``weight_v``, same order);
* ``update_stats=True`` (torch training mode): ``n_power_iterations`` steps
  ``v = normalize(W^T u)``, ``u = normalize(W v)`` without gradient, the new u, v are stored
  (apply with ``mutable=['spectral']``); ``update_stats=False`` (eval) uses the stored u, v;
* ``sigma = u . (W v)`` (gradient flows through W only), the convolution uses ``W / sigma``;
* ``normalize(x) = x / max(||x||, eps)``, eps = 1e-12; u, v are initialised as normalised
  standard normal vectors (from the ``'params'`` rng).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from peanut_jax.layers.conv import torch_uniform

Dtype = Any
_HI = lax.Precision.HIGHEST


def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def l2_normalize(x, eps: float = 1e-12):
    """torch ``F.normalize(x, dim=0, eps)`` for a vector."""
    return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x)), eps)


def power_iteration(w_mat, u, v, n_iterations: int = 1, eps: float = 1e-12):
    """``n_iterations`` torch-style power-iteration steps on ``w_mat`` (no gradient): (u, v)."""
    w = lax.stop_gradient(w_mat)
    for _ in range(n_iterations):
        v = l2_normalize(jnp.matmul(w.T, u, precision=_HI), eps)
        u = l2_normalize(jnp.matmul(w, v, precision=_HI), eps)
    return lax.stop_gradient(u), lax.stop_gradient(v)


def spectral_sigma(w_mat, u, v):
    """``u . (W v)``, differentiable in ``w_mat`` only."""
    return jnp.dot(lax.stop_gradient(u), jnp.matmul(w_mat, lax.stop_gradient(v), precision=_HI), precision=_HI)


class Conv3d(nn.Module):
    """torch ``nn.Conv3d`` (symmetric explicit padding) on (N, D, H, W, C), optionally spectral-normalised."""

    features: int
    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: int | Sequence[int] = 0
    use_bias: bool = True
    spectral_norm: bool = False
    n_power_iterations: int = 1
    eps: float = 1e-12
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable | None = None
    bias_init: Callable | None = None
    precision: Any = None

    @nn.compact
    def __call__(self, x, update_stats: bool = False):
        kt, kh, kw = _triple(self.kernel_size)
        cin = x.shape[-1]
        fan_in = cin * kt * kh * kw
        kernel = self.param(
            "kernel", self.kernel_init or torch_uniform(fan_in), (kt, kh, kw, cin, self.features), self.param_dtype
        )
        if self.spectral_norm:
            w_mat = kernel.astype(jnp.float32).transpose(4, 3, 0, 1, 2).reshape(self.features, -1)
            u = self.variable(
                "spectral",
                "u",
                lambda: l2_normalize(
                    jax.random.normal(self.make_rng("params"), (self.features,), jnp.float32), self.eps
                ),
            )
            v = self.variable(
                "spectral",
                "v",
                lambda: l2_normalize(jax.random.normal(self.make_rng("params"), (fan_in,), jnp.float32), self.eps),
            )
            uu, vv = u.value, v.value
            if update_stats and not self.is_initializing():
                uu, vv = power_iteration(w_mat, uu, vv, self.n_power_iterations, self.eps)
                u.value, v.value = uu, vv
            kernel = kernel.astype(jnp.float32) / spectral_sigma(w_mat, uu, vv)
        pt, ph, pw = _triple(self.padding)
        y = lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            _triple(self.stride),
            ((pt, pt), (ph, ph), (pw, pw)),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            precision=self.precision,
        )
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_uniform(fan_in), (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y
