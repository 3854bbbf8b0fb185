"""The weights as plain arrays, whichever form they come in."""

from __future__ import annotations

from flax import nnx


def as_arrays(params) -> dict:
    """The weights as a plain nested dict of arrays (from an nnx.State or a dict).

    Under jit this only unwraps the Params (no copy), so the forward's body
    works on the same dict whether it was given the module's state or a dict.
    """
    if isinstance(params, nnx.State):
        return nnx.to_pure_dict(params)
    return params
