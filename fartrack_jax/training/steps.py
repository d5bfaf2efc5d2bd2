"""Train state, its shardings, and the jitted train/eval steps shared by the three stages.

One mesh `(data, fsdp)` over all devices of all hosts (`make_train_mesh`). The batch is split along both
axes; params and optimizer state are replicated when `run.fsdp == 1` and otherwise split along `fsdp` on
one dimension per array (FSDP-style: XLA gathers them for the matmuls). A stage supplies only its loss,
`loss_fn(params, batch, rng) -> (loss, metrics)`; `make_train_step` adds gradients, the optimizer, the
NaN guard and the shardings, and jits it with the state donated.

The state is `{"step", "params", "opt_state", "rng"}` (a plain dict, so orbax, the converter and the
shardings all see one tree). `rng` is a raw `uint32[2]` key, split once per step: a resumed run draws the
same drop-path masks as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: gathering them costs more than storing them.
MIN_FSDP_SIZE = 2 ** 14

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def make_train_mesh(fsdp: int = 1, devices=None) -> jax.sharding.Mesh:
  """`(data, fsdp)` mesh over `devices` (default: every device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"run.fsdp={fsdp} does not divide the {len(devices)} devices")
  return jax.make_mesh((len(devices) // fsdp, fsdp), DATA_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def check_global_batch(global_batch: int, mesh: jax.sharding.Mesh) -> int:
  """The per-process batch; ValueError when the global batch does not split over devices and hosts."""
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(f"train.global_batch_size={global_batch} does not divide over the {devices} devices "
                     f"of the mesh {dict(mesh.shape)}; use a multiple of {devices}")
  processes = jax.process_count()
  if global_batch % processes:
    raise ValueError(f"train.global_batch_size={global_batch} does not divide over {processes} processes")
  return global_batch // processes


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXES))


def _leaf_spec(shape, fsdp: int) -> P:
  """Shard the largest dimension divisible by `fsdp` (ties: the first), if the array is big enough."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_FSDP_SIZE:
    return P()
  best = None
  for i, n in enumerate(shape):
    if n % fsdp == 0 and (best is None or n > shape[best]):
      best = i
  if best is None:
    return P()
  return P(*([None] * best + ["fsdp"]))


def state_shardings(state_shapes, mesh) -> Any:
  """A NamedSharding per leaf of the state (or of any tree of arrays/ShapeDtypeStructs)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _leaf_spec(x.shape, fsdp)), state_shapes)


def init_state(params, tx: optax.GradientTransformation, seed: int) -> dict:
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
          "rng": jax.random.PRNGKey(seed)}


def make_sharded_init(params_fn: Callable[[], Any], tx, seed: int, mesh):
  """`init()` building the state directly in its shardings (no full copy on one device first), and the
  state's shardings."""
  def build():
    return init_state(params_fn(), tx, seed)
  shapes = jax.eval_shape(build)
  shardings = state_shardings(shapes, mesh)
  return jax.jit(build, out_shardings=shardings), shardings


def device_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """This process's numpy batch -> global arrays split over the mesh (each host gives its own rows)."""
  return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                                local_batch)


# How many metrics the chained step's window can sum (a stage reports about a dozen).
WINDOW_CAPACITY = 32


def new_window(mesh, finite=None) -> dict:
  """The record the chained train step carries from step to step, on every device (replicated):
  `finite` (1 until a step is not finite, then 0 for good), `sums` (each metric summed over the steps since
  the window began, in the order `make_train_step`'s `window_names` gives) and `first_bad` (the step number,
  loss and gradient norm of the first step that was not finite; step 0 while there is none). `finite` given
  (the previous window's): a new logging window of the same run. (Zeros, not NaN, for "none": every process
  must put the same values, and JAX compares them with `==`.)"""
  replicated = NamedSharding(mesh, P())
  window = jax.device_put({"sums": np.zeros(WINDOW_CAPACITY, np.float32),
                           "first_bad": np.zeros(3, np.float32)}, replicated)
  window["finite"] = jax.device_put(np.float32(1.0), replicated) if finite is None else finite
  return window


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, state_sharding, mesh,
                    lr_schedules: dict[str, optax.Schedule] | None = None, chained: bool = False,
                    window_names: list[str] | None = None):
  """`step(state, batch) -> (state, metrics)`, jitted, state donated.

  A non-finite loss or gradient leaves the state unchanged (params, optimizer state and step) and reports
  `finite = 0`, so the caller can stop with the last good state still in hand.

  `chained=True`, the form the trainer runs: `step(state, batch, window) -> (state, window)`, where `window`
  is `new_window(mesh)` before the first step and then the previous step's. Once a step is not finite no
  later step updates the state, and the window keeps which step it was, so the host may queue many steps
  before it looks and still stop with the state of the last finite step, naming that step. The step's
  metrics are summed into `window["sums"]` on the devices instead of returned: nothing per step for the host
  to fetch or add (each output of a step costs a buffer per device at every call). Their names, in the
  order of the sums, are written into the caller's list `window_names` when the step is traced (before its
  first call returns).
  """
  lr_schedules = lr_schedules or {}
  data = batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())

  def step(state, batch, finite_so_far=None):
    rng, step_rng = jax.random.split(state["rng"])
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, step_rng)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if finite_so_far is not None:
      finite = finite & (finite_so_far > 0)
    new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": rng}
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
    for name, schedule in lr_schedules.items():
      metrics[f"lr_{name}"] = schedule(state["step"])
    return new, metrics

  def windowed_step(state, batch, window):
    new, metrics = step(state, batch, window["finite"])
    names = sorted(metrics)
    if len(names) > WINDOW_CAPACITY:
      raise ValueError(f"the train step reports {len(names)} metrics; steps.WINDOW_CAPACITY holds "
                       f"{WINDOW_CAPACITY}")
    if window_names is not None:
      window_names[:] = names
    values = jnp.stack([jnp.asarray(metrics[k], jnp.float32).reshape(()) for k in names])
    newly_bad = (window["finite"] > 0) & (metrics["finite"] == 0)
    this_step = jnp.stack([(state["step"] + 1).astype(jnp.float32), metrics["loss"].astype(jnp.float32),
                           metrics["grad_norm"].astype(jnp.float32)])
    return new, {"finite": metrics["finite"], "sums": window["sums"].at[:len(names)].add(values),
                 "first_bad": jnp.where(newly_bad, this_step, window["first_bad"])}

  if chained:
    return jax.jit(windowed_step, in_shardings=(state_sharding, data, replicated),
                   out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  return jax.jit(lambda state, batch: step(state, batch), in_shardings=(state_sharding, data),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


def make_eval_step(loss_fn: LossFn, state_sharding, mesh):
  """`eval(state, batch) -> metrics` with the loss function's deterministic path (rng unused)."""
  data = batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())

  def evaluate(state, batch):
    loss, metrics = loss_fn(state["params"], batch, None)
    return dict(metrics, loss=loss)

  return jax.jit(evaluate, in_shardings=(state_sharding, data), out_shardings=replicated)
