"""Linear operators with an explicit transpose as their gradient.

Static gathers and strided scatter-adds (``unfold``/``fold``, the resize taps) are linear in their
input, and their exact transpose is another cheap gather/scatter of the same kind.  Left to
autodiff, XLA:CPU compiles those transposes (scatter-adds, strided slices feeding a dense layer)
to code 10-50x slower than the forward op; :func:`with_transpose` states the transpose instead.
The result is a ``custom_vjp`` function: reverse mode (``grad``/``vjp``, to any order when the
transpose is itself such a function) works, forward mode (``jvp``) does not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax


def with_transpose(impl: Callable, transpose: Callable, num_static: int) -> Callable:
    """``op(x, *static) = impl(x, *static)`` whose gradient is ``transpose(g, *static)``.

    ``impl`` must be linear in ``x``; the ``num_static`` trailing arguments are hashable Python
    values (shapes, geometries), passed unchanged to ``transpose``."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=tuple(range(1, 1 + num_static)))
    def op(x, *static):
        return impl(x, *static)

    def fwd(x, *static):
        return impl(x, *static), None

    def bwd(*args):
        *static, _, g = args
        return (transpose(g, *static),)

    op.defvjp(fwd, bwd)
    return op
