"""The chained train step the trainer runs against the plain one, on a toy loss (no model: fast)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fartrack_jax.training import steps


def _loss(params, batch, rng):
  del rng
  residual = batch["x"] @ params["w"] - batch["y"]
  loss = jnp.mean(residual ** 2)
  return loss, {"probe": jnp.mean(batch["x"]), "abs_w": jnp.sum(jnp.abs(params["w"]))}


def _setup():
  mesh = steps.make_train_mesh(1)
  tx = optax.sgd(0.1)
  params = {"w": jnp.asarray(np.linspace(-1, 1, 3), jnp.float32)}
  shardings = steps.state_shardings(jax.eval_shape(lambda: steps.init_state(params, tx, 0)), mesh)
  fresh = lambda: jax.jit(lambda p: steps.init_state(p, tx, 0), out_shardings=shardings)(params)
  return mesh, tx, shardings, fresh


def _batches(n, bad_at=None):
  rng = np.random.default_rng(0)
  out = []
  for i in range(n):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    if i + 1 == bad_at:
      x[0, 0] = np.nan
    out.append({"x": x, "y": rng.standard_normal(4).astype(np.float32)})
  return out


def test_the_window_sums_each_steps_metrics_and_names_them():
  """Four chained steps leave the plain step's state, and the window holds the sum of the four plain steps'
  metrics, in the order `window_names` gives."""
  mesh, tx, shardings, fresh = _setup()
  plain = steps.make_train_step(_loss, tx, shardings, mesh)
  names = []
  chained = steps.make_train_step(_loss, tx, shardings, mesh, chained=True, window_names=names)
  data = steps.batch_sharding(mesh)
  state_a, state_b, window = fresh(), fresh(), steps.new_window(mesh)
  totals = {}
  for batch in _batches(4):
    state_a, metrics = plain(state_a, steps.device_batch(batch, data))
    for k, v in jax.device_get(metrics).items():
      totals[k] = totals.get(k, 0.0) + float(v)
    state_b, window = chained(state_b, steps.device_batch(batch, data), window)
  assert names == sorted(totals) and {"probe", "abs_w", "loss", "grad_norm", "finite"} <= set(names)
  sums = jax.device_get(window["sums"])
  np.testing.assert_allclose(sums[:len(names)], [totals[k] for k in names], rtol=1e-6)
  assert not sums[len(names):].any()
  assert float(window["finite"]) == 1.0 and float(window["first_bad"][0]) == 0.0
  np.testing.assert_array_equal(state_a["params"]["w"], state_b["params"]["w"])
  assert int(state_b["step"]) == 4


def test_the_first_non_finite_step_is_kept_and_no_later_step_moves_the_state():
  """A NaN in step 3's batch: the window keeps step 3 (not a later one) with its loss and gradient norm;
  steps 3-5 leave the state of step 2, and a new logging window keeps the flag down."""
  mesh, tx, shardings, fresh = _setup()
  chained = steps.make_train_step(_loss, tx, shardings, mesh, chained=True)
  data = steps.batch_sharding(mesh)
  state, window = fresh(), steps.new_window(mesh)
  batches = _batches(5, bad_at=3)
  for batch in batches[:2]:
    state, window = chained(state, steps.device_batch(batch, data), window)
  after_two = np.asarray(state["params"]["w"])
  for batch in batches[2:]:
    state, window = chained(state, steps.device_batch(batch, data), window)
  bad_step, loss, grad_norm = jax.device_get(window["first_bad"])
  assert float(window["finite"]) == 0.0 and bad_step == 3
  assert np.isnan(loss) and np.isnan(grad_norm)
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), after_two)
  assert int(state["step"]) == 2
  window = steps.new_window(mesh, finite=window["finite"])
  state, window = chained(state, steps.device_batch(batches[0], data), window)
  assert float(window["finite"]) == 0.0 and int(state["step"]) == 2
