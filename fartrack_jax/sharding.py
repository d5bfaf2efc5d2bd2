"""The one place that builds device meshes."""

from __future__ import annotations

import jax


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh with a `data` axis over the local devices (or the first `num_devices`).

  Axis type Auto: shardings are declared on inputs/outputs (`NamedSharding`) and propagated by XLA inside
  jitted functions, rather than carried in every array's type.
  """
  n = num_devices or jax.local_device_count()
  # This process's devices: in a job of several processes each tracks its own sequences.
  return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.local_devices()[:n])
