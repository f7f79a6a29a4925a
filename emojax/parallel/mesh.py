"""The `('data', 'model')` device mesh every run uses: over real devices, or device-free.

`data` splits prompts and sweep conditions, `model` splits weights (tensor parallelism);
`emojax.parallel.rules` decides which dimension goes on which axis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import AbstractMesh, AxisType, Mesh

AnyMesh = Mesh | AbstractMesh
MESH_AXES = ("data", "model")


def make_mesh(data: int = -1, model: int = 1, *, devices: Sequence[Any] | None = None) -> Mesh:
    """A `('data', 'model')` mesh over all devices (of every host).

    Args:
      data: size of the data axis; -1 takes all devices left after `model`.
      model: size of the model (tensor-parallel) axis.
      devices: devices to use (default `jax.devices()`).

    Returns:
      The mesh, with Auto axis types so un-annotated model code is partitioned by the compiler.
    """
    devices = list(jax.devices() if devices is None else devices)
    data, model = mesh_shape(len(devices), data, model)
    return jax.make_mesh((data, model), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def mesh_shape(num_devices: int, data: int = -1, model: int = 1) -> tuple[int, int]:
    """Resolves -1 entries of a (data, model) shape for `num_devices` devices."""
    if model == -1 and data == -1:
        raise ValueError("at most one of mesh.data and mesh.model may be -1")
    if model == -1:
        model = num_devices // data
    if data == -1:
        data = num_devices // model
    if data * model != num_devices or data < 1 or model < 1:
        raise ValueError(f"mesh ({data}, {model}) does not cover {num_devices} devices")
    return data, model


def abstract_mesh(data: int, model: int) -> AbstractMesh:
    """A device-free mesh of the given shape, for planning (`sharding.shard_shape`)."""
    return AbstractMesh((data, model), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def mesh_from_config(mesh_cfg: Any | None) -> Mesh:
    """`make_mesh` from a config's `mesh` section (`data`, `model`; missing = (-1, 1)).

    Scripts call this once, after `maybe_initialize_distributed(cfg.mesh.distributed)`, and
    pass `rules_from_config(cfg.mesh.rules)` wherever rules are taken.
    """
    get = (lambda k, d: getattr(mesh_cfg, k, d)) if mesh_cfg is not None else (lambda k, d: d)
    return make_mesh(int(get("data", -1)), int(get("model", 1)))


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
    """Context in which bare `PartitionSpec`s refer to `mesh` (`jax.set_mesh`)."""
    with jax.set_mesh(mesh):
        yield mesh
