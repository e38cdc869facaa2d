"""Loss functions (pure jnp, NHWC, official constants; jit- and grad-friendly).

Map-valued losses (``epe``, ``sobel``, ``ternary_loss``) return per-pixel maps like the official
modules; the caller reduces them.  Scalar losses return a 0-d array.
"""

from peanut_jax.losses.adversarial import hinge_discriminator_loss, hinge_generator_loss
from peanut_jax.losses.census import census_transform, rgb_to_grey, ternary_loss
from peanut_jax.losses.flow import (
    e2fgvi_flow_targets,
    epe,
    flow_completion_loss,
    flow_distillation_loss,
    flow_distillation_term,
    flow_l1,
    sobel,
)
from peanut_jax.losses.perceptual import PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS, perceptual_loss
from peanut_jax.losses.reconstruction import (
    charbonnier_loss,
    hole_loss,
    l1_loss,
    laplacian_loss,
    laplacian_pyramid,
    valid_loss,
)
from peanut_jax.losses.segmentation import (
    dice_loss,
    mask_losses,
    same_object_labels,
    sigmoid_focal_loss,
    weighted_cross_entropy,
)
from peanut_jax.losses.temporal import stc_loss

__all__ = [
    "PERCEPTUAL_LAYERS",
    "PERCEPTUAL_WEIGHTS",
    "census_transform",
    "dice_loss",
    "charbonnier_loss",
    "e2fgvi_flow_targets",
    "epe",
    "flow_completion_loss",
    "flow_distillation_loss",
    "flow_distillation_term",
    "flow_l1",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "hole_loss",
    "l1_loss",
    "laplacian_loss",
    "laplacian_pyramid",
    "mask_losses",
    "perceptual_loss",
    "rgb_to_grey",
    "same_object_labels",
    "sigmoid_focal_loss",
    "sobel",
    "stc_loss",
    "ternary_loss",
    "valid_loss",
    "weighted_cross_entropy",
]
