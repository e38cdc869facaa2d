"""SAM 2's prompt encoder (``sam_prompt_encoder``): points, boxes and a mask prompt -> sparse tokens
(B, N, d) and a dense map (B, h, w, d), NHWC.  h = w = ``cfg.embedding_size``.

Random-Fourier position encoding: ``positional_encoding_gaussian_matrix`` G (2, d/2), a checkpoint
buffer kept here as a parameter; a point (x, y) normalised to [0, 1] encodes as
``[sin(f), cos(f)]`` with ``f = 2*pi * ((2*(x, y) - 1) @ G)``.  The dense PE (``dense_pe``) encodes
the cell centres ``((j+0.5)/w, (i+0.5)/h)``.  Computed in float32.

Points (x, y) are pixels of the ``image_size`` x ``image_size`` model input.  Each point is shifted
by +0.5 and divided by (W, H), then by label:

* ``-1``: the token is ``not_a_point_embed`` alone (the coordinates are ignored: the PE is zeroed);
* ``0`` / ``1`` / ``2`` / ``3``: PE + ``point_embeddings[label]`` (negative click, positive click,
  box top-left, box bottom-right);
* any other label: the bare PE (what the official code does, never used by it).

When ``boxes is None`` (always in SAM 2's own heads and predictors, which pass boxes as two points
labelled 2/3) a padding point (0, 0) labelled -1 is appended, i.e. one extra ``not_a_point`` token.
A label -1 token is a real token for the mask decoder: it takes part in every attention, so appending
more -1 points **changes** the decoder's outputs (slightly).  To pad prompts to a static length
without changing results, pass the mask decoder a ``sparse_mask`` that is False on the padding.

Mask prompt: (B, 4h, 4w, 1) logits -> ``mask_downscaling`` (Conv 2x2 s2 -> LN2d -> GELU ->
Conv 2x2 s2 -> LN2d -> GELU -> Conv 1x1; LN2d eps 1e-6, exact GELU); without a mask,
``no_mask_embed`` is broadcast.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d
from peanut_jax.layers.linear import layer_norm
from peanut_jax.models.sam2.config import SAM2Config

Dtype = Any
MASK_IN_CHANS = 16  # hard-coded in the official SAM2Base (mask_in_chans=16)


def random_fourier_pe(coords, gaussian):
    """``PositionEmbeddingRandom._pe_encoding``: coords (..., 2) in [0, 1] -> (..., 2 * G.shape[1])."""
    coords = 2 * coords.astype(jnp.float32) - 1
    coords = coords @ gaussian.astype(jnp.float32)
    coords = 2 * math.pi * coords
    return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)


class PromptEncoder(nn.Module):
    cfg: SAM2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        d = self.cfg.d_model
        emb = nn.initializers.normal(1.0)  # torch nn.Embedding / randn buffer
        self.positional_encoding_gaussian_matrix = self.param(
            "positional_encoding_gaussian_matrix", emb, (2, d // 2), self.param_dtype
        )
        self.point_embeddings = [self.param(f"point_embeddings_{i}", emb, (1, d), self.param_dtype) for i in range(4)]
        self.not_a_point_embed = self.param("not_a_point_embed", emb, (1, d), self.param_dtype)
        self.no_mask_embed = self.param("no_mask_embed", emb, (1, d), self.param_dtype)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.mask_downscaling_0 = Conv2d(MASK_IN_CHANS // 4, 2, 2, **kw)
        self.mask_downscaling_1 = layer_norm(1e-6, **kw)
        self.mask_downscaling_3 = Conv2d(MASK_IN_CHANS, 2, 2, **kw)
        self.mask_downscaling_4 = layer_norm(1e-6, **kw)
        self.mask_downscaling_6 = Conv2d(d, 1, **kw)

    # ------------------------------------------------------------------ pieces
    def dense_pe(self):
        """(h, w, d) position encoding of the image-embedding grid (``get_dense_pe`` in NHWC)."""
        h = w = self.cfg.embedding_size
        y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)  # (h, w, 2) as (x, y)
        return random_fourier_pe(grid, self.positional_encoding_gaussian_matrix).astype(self.dtype)

    def _pe_coords(self, coords):
        s = self.cfg.image_size
        return random_fourier_pe(coords / jnp.asarray([s, s], jnp.float32), self.positional_encoding_gaussian_matrix)

    def embed_points(self, coords, labels, pad: bool):
        """(B, N, 2) pixel coords, (B, N) int labels -> (B, N + pad, d)."""
        coords = coords.astype(jnp.float32) + 0.5
        labels = labels.astype(jnp.int32)
        if pad:
            b = coords.shape[0]
            coords = jnp.concatenate([coords, jnp.zeros((b, 1, 2), jnp.float32)], axis=1)
            labels = jnp.concatenate([labels, -jnp.ones((b, 1), jnp.int32)], axis=1)
        pe = self._pe_coords(coords)
        lab = labels[..., None]
        pe = jnp.where(lab == -1, jnp.zeros_like(pe) + self.not_a_point_embed.astype(jnp.float32), pe)
        for i in range(4):
            pe = jnp.where(lab == i, pe + self.point_embeddings[i].astype(jnp.float32), pe)
        return pe.astype(self.dtype)

    def embed_boxes(self, boxes):
        """(B, 4) (x0, y0, x1, y1) pixels -> (B, 2, d) corner tokens."""
        corners = (boxes.astype(jnp.float32) + 0.5).reshape(-1, 2, 2)
        pe = self._pe_coords(corners)
        pe = pe + jnp.stack([self.point_embeddings[2][0], self.point_embeddings[3][0]]).astype(jnp.float32)
        return pe.astype(self.dtype)

    def embed_masks(self, masks):
        """(B, 4h, 4w, 1) mask logits -> (B, h, w, d)."""
        gelu = lambda t: jax.nn.gelu(t, approximate=False)  # noqa: E731
        x = gelu(self.mask_downscaling_1(self.mask_downscaling_0(masks.astype(self.dtype))))
        x = gelu(self.mask_downscaling_4(self.mask_downscaling_3(x)))
        return self.mask_downscaling_6(x)

    # ------------------------------------------------------------------ forward
    def __call__(self, points=None, boxes=None, masks=None):
        """``points`` = (coords (B, N, 2), labels (B, N)) or None, ``boxes`` (B, 4) or None, ``masks``
        (B, 4h, 4w, 1) or None -> (sparse (B, N', d), dense (B, h, w, d)); N' = N + 1 (padding point)
        + 2 * (boxes given), the padding point only when ``boxes`` is None."""
        d, hw = self.cfg.d_model, self.cfg.embedding_size
        if self.is_initializing() and masks is None:  # create every parameter at init
            self.embed_masks(jnp.zeros((1, 4, 4, 1), self.dtype))
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        sparse = [jnp.zeros((bs, 0, d), self.dtype)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        sparse = jnp.concatenate(sparse, axis=1)
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            dense = jnp.broadcast_to(self.no_mask_embed.reshape(1, 1, 1, d).astype(self.dtype), (bs, hw, hw, d))
        return sparse, dense
