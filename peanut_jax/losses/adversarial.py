"""Hinge adversarial losses as E2FGVI uses them (``core/loss.py`` ``AdversarialLoss(type='hinge')``
combined as in ``core/trainer.py``). Inputs are raw discriminator outputs (no sigmoid for hinge).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["hinge_discriminator_loss", "hinge_generator_loss"]


def hinge_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """E2FGVI D loss: ``(mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))) / 2``.

    The official ``AdversarialLoss`` returns the two means separately and the trainer averages them
    (the ``/ 2``).  ``fake_logits`` must come from the composited clip with the generator output
    detached (``D(lax.stop_gradient(comp))``); the discriminator's own step then differentiates this.
    """
    real = jnp.mean(jax.nn.relu(1.0 - real_logits))
    fake = jnp.mean(jax.nn.relu(1.0 + fake_logits))
    return (real + fake) / 2


def hinge_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """E2FGVI G adversarial term: ``-mean(D(comp))`` (the trainer multiplies it by 0.01)."""
    return -jnp.mean(fake_logits)
