"""Running emojax on many devices and hosts: one module per job.

Dimension legend: L layers, D model width, H query heads, G key/value heads, K head dim,
F MLP width, V vocabulary, B batch (prompts), C conditions, T time.

Every run uses one `('data', 'model')` mesh. Weights are sharded on `model` over their head,
MLP and vocabulary dimensions; prompts and sweep conditions are sharded on `data`. Which mesh
axis a dimension goes to is decided in two steps, as in maxtext and t5x:

1. every Params leaf has *logical* axis names (`logical_axes`), e.g. wq is
   `('layers', 'embed', 'heads', 'head_dim')`;
2. `rules` map logical names to mesh axes (`DEFAULT_RULES`, overridable from a config's
   `mesh.rules`). A dimension that the mesh axis does not divide evenly stays replicated
   (e.g. 8 key/value heads on a 16-way `model` axis), so any checkpoint fits any mesh.

Nothing in the model code knows about meshes: `jax.jit` propagates the shardings of committed
inputs, so the forward pass, extraction, sweeps and probes run sharded unchanged once the
params come from `shard_params` / `load_sharded_params` and batches from `shard_batch`.

Multi-host (TPU pod slices): `maybe_initialize_distributed` before anything touches a device,
every host runs the same program on the same (small) prompt arrays, `shard_batch` hands each
device only its rows, `to_host` gathers results, and only `is_writer()` writes files.

Modules:

* `mesh`: the `('data', 'model')` mesh (`make_mesh`, `mesh_from_config`, `abstract_mesh`).
* `rules`: logical axes, the rules mapping them to mesh axes, and the parameter layouts they
  give (`param_shardings`, `shard_params`, `abstract_sharded_params`).
* `activations`: batches and activations on `data` (`shard_batch`, `pad_batch`,
  `constrain`, `sharded_jit`).
* `loading`: a Hugging Face checkpoint read straight into sharded arrays
  (`load_sharded_params`).
* `multihost`: processes of a pod slice (`maybe_initialize_distributed`, `is_writer`,
  `to_host`, `sync`, reads of process 0's files).
* `plan`: memory per device and sweep FLOPs before anything runs (`plan`, `reference_config`).

`emojax.sharding` re-exports every public name of these modules as one flat namespace
(`from emojax import sharding; sharding.make_mesh(...)`), the form the README uses.
"""
