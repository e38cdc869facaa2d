"""Helpers shared by the per-model converters: layout transposes and strict key matching."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.convert.reader import strip_prefix  # noqa: F401  (re-exported for converters)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not match the model: lists keys and shapes by name."""


def conv_w(w):
    """torch Conv2d (O, I/g, kh, kw) -> HWIO."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 1, 0))


def conv_w_back(k):
    return np.ascontiguousarray(np.asarray(k).transpose(3, 2, 0, 1))


def convT_w(w):
    """torch ConvTranspose2d (I, O, kh, kw) -> (kh, kw, I, O)."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 0, 1))


def convT_w_back(k):
    return np.ascontiguousarray(np.asarray(k).transpose(2, 3, 0, 1))


def conv3d_w(w):
    """torch Conv3d (O, I, kt, kh, kw) -> (kt, kh, kw, I, O)."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 4, 1, 0))


def conv3d_w_back(k):
    return np.ascontiguousarray(np.asarray(k).transpose(4, 3, 0, 1, 2))


def linear_w(w):
    """torch Linear (out, in) -> (in, out)."""
    return np.ascontiguousarray(np.asarray(w).T)


linear_w_back = linear_w


def identity(x):
    return np.asarray(x)


class KeyMap:
    """A list of (torch key, flax path tuple, torch->flax fn, flax->torch fn) rules.

    ``apply(sd)`` builds the nested params dict and raises CheckpointMismatchError with every
    missing/unexpected key and shape mismatch; ``invert(params)`` produces the torch state dict.
    """

    def __init__(self):
        self.rules: list[tuple[str, tuple, Callable, Callable]] = []

    def add(self, torch_key: str, path: tuple, fwd: Callable = identity, back: Callable | None = None):
        self.rules.append((torch_key, tuple(path), fwd, back or fwd))
        return self

    def conv(self, torch_prefix: str, path: tuple, bias: bool = True):
        self.add(f"{torch_prefix}.weight", (*path, "kernel"), conv_w, conv_w_back)
        if bias:
            self.add(f"{torch_prefix}.bias", (*path, "bias"))
        return self

    def conv_t(self, torch_prefix: str, path: tuple, bias: bool = True):
        self.add(f"{torch_prefix}.weight", (*path, "kernel"), convT_w, convT_w_back)
        if bias:
            self.add(f"{torch_prefix}.bias", (*path, "bias"))
        return self

    def linear(self, torch_prefix: str, path: tuple, bias: bool = True):
        self.add(f"{torch_prefix}.weight", (*path, "kernel"), linear_w, linear_w_back)
        if bias:
            self.add(f"{torch_prefix}.bias", (*path, "bias"))
        return self

    def norm(self, torch_prefix: str, path: tuple):
        self.add(f"{torch_prefix}.weight", (*path, "scale"))
        self.add(f"{torch_prefix}.bias", (*path, "bias"))
        return self

    def apply(
        self,
        sd: Mapping[str, np.ndarray],
        reference: Mapping | None = None,
        *,
        model: str = "model",
        source: str = "checkpoint",
        ignore: Callable[[str], bool] | None = None,
    ) -> dict:
        """Map ``sd`` to a nested params dict.  ``reference`` (a params tree from ``module.init``)
        gives the expected shapes; keys for which ``ignore(key)`` is true may be present or absent."""
        ignore = ignore or (lambda k: False)
        wanted = {r[0] for r in self.rules}
        missing = [r[0] for r in self.rules if r[0] not in sd]
        unexpected = [k for k in sd if k not in wanted and not ignore(k)]
        flat_ref = flatten_dict(reference) if reference is not None else None
        out, shape_err = {}, []
        for tkey, path, fwd, _ in self.rules:
            if tkey not in sd:
                continue
            val = fwd(np.asarray(sd[tkey]))
            if flat_ref is not None:
                exp = flat_ref.get(path)
                if exp is None:
                    raise KeyError(f"converter bug: {path} not in the {model} parameters")
                if tuple(exp.shape) != tuple(val.shape):
                    shape_err.append(
                        f"{tkey}: checkpoint {tuple(np.asarray(sd[tkey]).shape)} -> "
                        f"{tuple(val.shape)}, model expects {tuple(exp.shape)}"
                    )
                    continue
                val = val.astype(exp.dtype)
            out[path] = val
        if missing or unexpected or shape_err:
            raise CheckpointMismatchError(format_mismatch(model, source, missing, unexpected, shape_err))
        if flat_ref is not None:
            uncovered = [p for p in flat_ref if p not in out]
            if uncovered:
                raise KeyError(f"converter bug: {model} parameters not covered by the key map: {uncovered[:5]}")
        return unflatten_dict(out)

    def invert(self, params) -> dict[str, np.ndarray]:
        flat = flatten_dict(params)
        sd = {}
        for tkey, path, _, back in self.rules:
            sd[tkey] = back(np.asarray(flat[path]))
        return sd


def format_mismatch(model, source, missing, unexpected, shape_err, limit: int = 12) -> str:
    def fmt(title, items):
        if not items:
            return ""
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more

    return (
        f"{source} does not match model {model!r}:"
        + fmt("missing keys", missing)
        + fmt("unexpected keys", unexpected)
        + fmt("shape mismatches", shape_err)
    )


def tensors_only(obj) -> dict[str, np.ndarray]:
    """The entries of a flat mapping that are arrays."""
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray) or hasattr(v, "__array__")}
