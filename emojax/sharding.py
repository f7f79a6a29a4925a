"""Every public name of `emojax.parallel`, in the one flat namespace the README uses.

`from emojax import sharding` then `sharding.make_mesh(...)`, `sharding.load_sharded_params(...)`,
`sharding.is_writer()`: the code lives in `emojax/parallel/`, one module per job (`mesh`,
`rules`, `activations`, `loading`, `multihost`, `plan`; its docstring explains the mesh, the
logical axis rules and the multi-host model). This module only re-exports, so a name is found
here and defined there.
"""

from jax.sharding import PartitionSpec as P

from emojax.parallel.activations import (
    constrain,
    data_sharding,
    data_spec,
    global_batch,
    host_local_batch,
    host_local_range,
    pad_batch,
    replicated,
    shard_batch,
    shard_tree,
    sharded_jit,
)
from emojax.parallel.loading import load_sharded_params
from emojax.parallel.mesh import (
    MESH_AXES,
    AnyMesh,
    abstract_mesh,
    make_mesh,
    mesh_from_config,
    mesh_shape,
    use_mesh,
)
from emojax.parallel.multihost import (
    WRITER_FILES,
    broadcast_from_writer,
    is_writer,
    maybe_initialize_distributed,
    read_on_writer,
    sync,
    to_host,
    writer_exists,
)
from emojax.parallel.plan import (
    REFERENCE_HF_CONFIGS,
    TPU_SPECS,
    Plan,
    plan,
    planned_param_bytes,
    reference_config,
    sweep_flops,
)
from emojax.parallel.rules import (
    DEFAULT_RULES,
    Array,
    abstract_sharded_params,
    init_sharded_params,
    logical_axes,
    logical_to_spec,
    param_shardings,
    param_specs,
    per_device_bytes,
    rules_from_config,
    shard_params,
)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "P",
    "REFERENCE_HF_CONFIGS",
    "TPU_SPECS",
    "WRITER_FILES",
    "AnyMesh",
    "Array",
    "Plan",
    "abstract_mesh",
    "abstract_sharded_params",
    "broadcast_from_writer",
    "constrain",
    "data_sharding",
    "data_spec",
    "global_batch",
    "host_local_batch",
    "host_local_range",
    "init_sharded_params",
    "is_writer",
    "load_sharded_params",
    "logical_axes",
    "logical_to_spec",
    "make_mesh",
    "maybe_initialize_distributed",
    "mesh_from_config",
    "mesh_shape",
    "pad_batch",
    "param_shardings",
    "param_specs",
    "per_device_bytes",
    "plan",
    "planned_param_bytes",
    "read_on_writer",
    "reference_config",
    "replicated",
    "rules_from_config",
    "shard_batch",
    "shard_params",
    "shard_tree",
    "sharded_jit",
    "sweep_flops",
    "sync",
    "to_host",
    "use_mesh",
    "writer_exists",
]
