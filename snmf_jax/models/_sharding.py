"""Placing a model's weights on a device mesh from their logical axis names.

Every `nnx.Param` of the module tree names its axes ("layers", "vocab",
"embed", "heads", "kv", "mlp", ...). A rule table maps logical names onto
mesh axes; the default shards the wide axes (vocabulary, heads, MLP) over a
"model" mesh axis (tensor parallelism) and replicates the rest, so a batch
sharded over "data" runs data-parallel across it.
"""

from __future__ import annotations

from typing import Mapping

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Logical axis -> mesh axis (None: replicated).
DEFAULT_RULES: Mapping[str, str | None] = {
    "vocab": "model", "heads": "model", "kv": "model", "mlp": "model",
    "embed": None, "layers": None, "position": None, "head_dim": None,
}


def auto_mesh(mesh: Mesh) -> Mesh:
    """The mesh with every axis of type Auto (the compiler places intermediates).

    `jax.make_mesh` makes Explicit axes by default, under which the
    embedding gather of a vocabulary-sharded table needs an explicit output
    sharding; the forward is written for compiler-chosen intermediates.
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)


def param_shardings(params: nnx.State, mesh: Mesh,
                    rules: Mapping[str, str | None] = DEFAULT_RULES) -> nnx.State:
    """NamedSharding of every weight, from its logical axes and `rules`.

    An axis is sharded only when the mesh axis it maps to exists and divides
    its length; otherwise it is replicated (e.g. 3 KV heads on 4 devices).

    Args:
      params: the model's nnx.State (values or jax.ShapeDtypeStruct).
      mesh: the device mesh.
      rules: logical axis name -> mesh axis name or None.

    Returns:
      An nnx.State of NamedSharding with the structure of `params`.
    """
    mesh = auto_mesh(mesh)
    specs = nnx.get_partition_spec(params)

    def one(spec, value):
        spec = spec.get_value() if isinstance(spec, nnx.Variable) else spec
        axes = []
        for name, size in zip(tuple(spec), value.shape):
            target = rules.get(name) if name is not None else None
            ok = target in mesh.shape and size % mesh.shape[target] == 0
            axes.append(target if ok else None)
        return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(one, specs, params, is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_params(params: nnx.State, mesh: Mesh,
                 rules: Mapping[str, str | None] = DEFAULT_RULES) -> nnx.State:
    """The weights placed on `mesh` per `param_shardings` (same values).

    Args:
      params: the model's nnx.State.
      mesh: the device mesh (axes named e.g. ("data", "model")).
      rules: logical axis name -> mesh axis name or None.

    Returns:
      The nnx.State with every array sharded (or replicated) over the mesh.
    """
    return jax.device_put(params, param_shardings(params, mesh, rules))
