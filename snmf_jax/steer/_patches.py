"""Building steering patches: data that edits activations at named sites.

A `Patch` is the models contract's mapping ``{(layer, site): SitePatch}``. Its
keys are static (they decide where the forward edits and are part of the
compiled program); its leaves are arrays, so new vectors or scales reuse the
compiled forward. Where in the sequence a patch acts is chosen by a static
*position mode* that the steered forward turns into a (B, T) mask:

- "all": every real (non-padding) token, prompt and generated;
- "prompt": the prompt's tokens only (the cache then carries the edit);
- "generated": tokens produced by decoding only.

A *batched* patch holds N variants at once: vectors (N, dim), scales (N,).
Its rows line up with the batch of a forward pass (one variant per row), or
it can be mapped over with `jax.vmap(..., in_axes=(vmap_axes(patch),))`.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array

from snmf_jax import _checks
from snmf_jax.models import SITES, ModelConfig, Patch, SitePatch

PositionMode = Literal["all", "prompt", "generated"]
POSITION_MODES = ("all", "prompt", "generated")
PatchMode = Literal["add", "replace"]
_MODES = {"add": 0.0, "replace": 1.0}


def check_where(where: str) -> str:
    """Validates a position mode and returns it."""
    if where not in POSITION_MODES:
        raise ValueError(f"where must be one of {POSITION_MODES}; got {where!r}")
    return where


def site_patch(vector, *, scale=1.0, mode: PatchMode = "add") -> SitePatch:
    """One site's edit: h <- h + scale * vector ("add") or scale * vector ("replace").

    Args:
      vector: (dim,) one direction, or (N, dim) one per variant.
      scale: () or (N,) multiplier (the steering alpha).
      mode: "add" or "replace".

    Returns:
      A SitePatch with float32 leaves and no position mask.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'add' or 'replace'; got {mode!r}")
    _checks.finite_array("vector", vector)
    _checks.finite_array("scale", scale)
    vector = jnp.asarray(vector, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    if vector.ndim not in (1, 2):
        raise ValueError(
            f"vector must have shape (dim,) or (N, dim); got shape {vector.shape}")
    if scale.ndim > 1:
        raise ValueError(f"scale must be a scalar or shape (N,); got shape {scale.shape}")
    if vector.ndim == 2 and scale.ndim == 1 and scale.shape[0] != vector.shape[0]:
        raise ValueError(
            f"scale has {scale.shape[0]} entries but vector has {vector.shape[0]} rows")
    return SitePatch(vector=vector, scale=scale,
                     replace=jnp.asarray(_MODES[mode], jnp.float32), positions=None)


def make_patch(layer: int, site: str, vector, *, scale=1.0, mode: PatchMode = "add",
               config: ModelConfig | None = None) -> dict[tuple[int, str], SitePatch]:
    """A one-site Patch {(layer, site): SitePatch}.

    Args:
      layer: block index.
      site: "mlp_hidden", "mlp_out" or "resid_post".
      vector: (dim,) or (N, dim).
      scale: () or (N,).
      mode: "add" or "replace".
      config: when given, the layer range and the vector width are checked.

    Returns:
      The patch (a plain dict, a pytree).
    """
    patch = {(_checks.integer("layer", layer, lo=0), site): site_patch(vector, scale=scale, mode=mode)}
    check_patch(patch, config)
    return patch


def combine(*patches: Patch) -> dict[tuple[int, str], SitePatch]:
    """Merges patches on distinct sites into one."""
    out: dict[tuple[int, str], SitePatch] = {}
    for p in patches:
        for key, sp in p.items():
            if key in out:
                raise ValueError(f"site {key} appears in more than one patch")
            out[key] = sp
    return out


def check_patch(patch: Patch, config: ModelConfig | None = None) -> int | None:
    """Validates a patch and returns its number of variants (None if unbatched).

    Args:
      patch: the patch.
      config: when given, layers and vector widths are checked against it.

    Returns:
      N for a batched patch (every 2-D vector / 1-D scale has N rows), else None.
    """
    if not isinstance(patch, Mapping):
        raise TypeError(f"patch must be a mapping {{(layer, site): SitePatch}}; got "
                        f"{type(patch).__name__}")
    n = None
    for key, sp in patch.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"patch keys must be (layer, site) tuples; got {key!r}")
        layer, site = key
        _checks.integer(f"patch layer of {key}", layer, lo=0)
        if site not in SITES:
            raise ValueError(f"patch site must be one of {SITES}; got {site!r}")
        if not isinstance(sp, SitePatch):
            raise TypeError(f"patch[{key}] must be a SitePatch; got {type(sp).__name__}")
        vshape, sshape = np.shape(sp.vector), np.shape(sp.scale)
        _checks.finite_array(f"patch[{key}].vector", sp.vector)
        _checks.finite_array(f"patch[{key}].scale", sp.scale)
        if np.shape(sp.replace) != ():
            raise ValueError(f"patch[{key}].replace must be a scalar; got shape "
                             f"{np.shape(sp.replace)}")
        if config is not None:
            if not 0 <= layer < config.n_layers:
                raise ValueError(
                    f"patch layer must be in [0, {config.n_layers}); got {layer}")
            dim = config.site_dim(site)
            if vshape[-1] != dim:
                raise ValueError(
                    f"patch[{key}].vector must have width {dim} (the {site} width); "
                    f"got shape {vshape}")
        for rows in ([vshape[0]] if len(vshape) == 2 else []) + (
                [sshape[0]] if len(sshape) == 1 else []):
            if n is not None and rows != n:
                raise ValueError(
                    f"batched patch has inconsistent variant counts: {n} and {rows} at {key}")
            n = rows
    return n


def with_scale(patch: Patch, scale) -> dict[tuple[int, str], SitePatch]:
    """The same patch with every site's scale replaced by `scale` (() or (N,)).

    The one way to change a patch's strength: to flip or multiply, pass the
    new scales (e.g. `with_scale(patch, -alphas)`).
    """
    _checks.finite_array("scale", scale)
    scale = jnp.asarray(scale, jnp.float32)
    return {k: sp._replace(scale=scale) for k, sp in patch.items()}


def stack_patches(patches: Sequence[Patch]) -> dict[tuple[int, str], SitePatch]:
    """Stacks unbatched patches with the same sites into one batched patch.

    Args:
      patches: N patches with identical keys, each vector (dim,) and scale ().

    Returns:
      A patch with vectors (N, dim) and scales (N,).
    """
    if not patches:
        raise ValueError("stack_patches needs at least one patch")
    keys = set(patches[0])
    out = {}
    for key in patches[0]:
        sps = []
        for i, p in enumerate(patches):
            if set(p) != keys:
                raise ValueError(f"patch {i} has sites {sorted(p)}; expected {sorted(keys)}")
            sp = p[key]
            if np.ndim(sp.vector) != 1 or np.ndim(sp.scale) != 0:
                raise ValueError(f"patch {i} is already batched at {key}")
            sps.append(sp)
        replace = {float(sp.replace) for sp in sps}
        if len(replace) > 1:
            raise ValueError(f"cannot stack add and replace patches at {key}")
        out[key] = SitePatch(
            vector=jnp.stack([jnp.asarray(sp.vector, jnp.float32) for sp in sps]),  # (N, dim)
            scale=jnp.stack([jnp.asarray(sp.scale, jnp.float32) for sp in sps]),  # (N,)
            replace=sps[0].replace, positions=None)
    return out


def broadcast_patch(patch: Patch, n: int) -> dict[tuple[int, str], SitePatch]:
    """Gives every leaf an explicit variant axis: vectors (n, dim), scales (n,)."""
    out = {}
    for k, sp in patch.items():
        vec = jnp.asarray(sp.vector, jnp.float32)
        scale = jnp.asarray(sp.scale, jnp.float32)
        out[k] = sp._replace(
            vector=jnp.broadcast_to(vec, (n, vec.shape[-1])),  # (n, dim)
            scale=jnp.broadcast_to(scale, (n,)))
    return out


def repeat_rows(patch: Patch, n_variants: int, repeats: int) -> dict[tuple[int, str], SitePatch]:
    """Expands a batched patch so each variant covers `repeats` consecutive rows.

    Args:
      patch: batched with `n_variants` variants, or unbatched.
      n_variants: N.
      repeats: rows per variant (prompts x samples).

    Returns:
      A patch with vectors (N * repeats, dim), scales (N * repeats,),
      variant-major (row r belongs to variant r // repeats).
    """
    full = broadcast_patch(patch, n_variants)
    return {k: sp._replace(vector=jnp.repeat(sp.vector, repeats, axis=0),  # (N*R, dim)
                           scale=jnp.repeat(sp.scale, repeats, axis=0))  # (N*R,)
            for k, sp in full.items()}


def vmap_axes(patch: Patch):
    """`in_axes` for mapping a batched patch with `jax.vmap` (variants on axis 0)."""
    return {k: SitePatch(vector=0 if np.ndim(sp.vector) == 2 else None,
                         scale=0 if np.ndim(sp.scale) == 1 else None,
                         replace=None, positions=None)
            for k, sp in patch.items()}


def position_mask(where: str, n_tokens: int, *, prompt_len, offset=0,
                  attention_mask: Array | None = None) -> Array:
    """The (B|1, T) mask of positions a patch edits in one forward call.

    Positions are absolute slots: token t of this call sits at `offset + t`;
    slots before `prompt_len` belong to the (left-padded) prompt.

    Args:
      where: "all", "prompt" or "generated".
      n_tokens: T, tokens in this call.
      prompt_len: () padded prompt length (traced is fine).
      offset: () slot of this call's first token (the cache length).
      attention_mask: (B, T) 1 for real tokens; padding is never edited.

    Returns:
      float32 mask (B, T), or (1, T) without an attention mask.
    """
    check_where(where)
    slots = offset + jnp.arange(n_tokens)[None, :]  # (1, T)
    if where == "all":
        m = jnp.ones((1, n_tokens), jnp.float32)
    elif where == "prompt":
        m = (slots < prompt_len).astype(jnp.float32)
    else:
        m = (slots >= prompt_len).astype(jnp.float32)
    if attention_mask is not None:
        m = m * jnp.asarray(attention_mask, jnp.float32)
    return m


def with_positions(patch: Patch, positions: Array) -> dict[tuple[int, str], SitePatch]:
    """Sets (or intersects with) the (B, T) position mask of every site."""
    out = {}
    for k, sp in patch.items():
        pos = positions if sp.positions is None else positions * sp.positions
        out[k] = sp._replace(positions=pos)
    return out
