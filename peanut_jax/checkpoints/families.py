"""Model families: which models, converter, registry weights, stage and default checkpoint belong
together.  ``family("e2fgvi_hq") == "e2fgvi"``: weights of one family load into each other's names."""
from __future__ import annotations


def family(name: str) -> str:
    """Model family of a model name: ``e2fgvi`` / ``e2fgvi_hq`` -> ``e2fgvi``, ``rife_hdv3`` -> ``rife``."""
    return str(name).split("_")[0]


def check_family(got: str, name: str, where) -> None:
    """The one family check of every checkpoint kind: weights of model ``got`` found at ``where``
    must be of the family of ``name``."""
    if family(got) != family(name):
        raise ValueError(f"{where}: holds weights of model {got!r}, not {name!r}")


# family -> converter module whose ``detect`` recognises official files (model variant, wrong family)
_DETECT = {"e2fgvi": "peanut_jax.convert.e2fgvi", "basicvsr": "peanut_jax.convert.basicvsr_pp",
           "rife": "peanut_jax.convert.rife", "spynet": "peanut_jax.convert.spynet"}
