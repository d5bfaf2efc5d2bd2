"""The optimizer against the original's param groups, StepLR and torch AdamW semantics, computed by hand."""

import jax
import numpy as np
import pytest

from fartrack_jax import config_lib
from fartrack_jax import model as model_lib
from fartrack_jax.training import optim
from tests.conftest import load_config


def _params(config):
  return jax.tree_util.tree_map(np.asarray, model_lib.init_params(model_lib.build_model(config),
                                                                   jax.random.PRNGKey(0)))


def test_param_groups_follow_the_original_names():
  config = load_config("fartrack", "smoke")  # 1 ViT block + 1 extension block
  labels = optim.param_labels(_params(config), config)
  # Outside `backbone`: full lr.
  assert labels["identity"] == "full_lr"
  # `backbone` names containing output_bias / embeddings / extension: full lr.
  assert labels["output_bias"] == "full_lr"
  assert labels["word_embeddings"] == "full_lr"
  assert labels["position_embeddings"] == "full_lr"
  assert all(v == "full_lr" for v in jax.tree_util.tree_leaves(labels["layer_1"]))  # extension.0
  # Every other backbone param: lr * backbone_multiplier. `pos_embed_x` holds "embed" but not "embeddings".
  assert all(v == "backbone" for v in jax.tree_util.tree_leaves(labels["layer_0"]))  # blocks.0
  assert labels["pos_embed_x"] == "backbone"
  assert labels["pos_embed_z0"] == "backbone"
  assert labels["norm"]["scale"] == "backbone"
  assert labels["patch_embed"]["kernel"] == "backbone"
  # Never read by the forward: no gradient in PyTorch, so AdamW leaves them alone.
  assert labels["cls_token"] == labels["pos_embed"] == labels["pos_embed_z1"] == "frozen"


def test_sparse_unmasked_norms_are_frozen():
  config = load_config("fartrack_sparse", "smoke")
  labels = optim.param_labels(_params(config), config)
  assert labels["layer_0"]["norm1"]["scale"] == "frozen"
  assert labels["layer_0"]["masknorm1"]["scale"] == "backbone"
  assert labels["prev_position_embeddings"] == "frozen"


def test_step_schedule_drops_tenfold_at_the_drop_epoch():
  config = load_config("fartrack", "smoke")
  config.train.lr = 1e-3
  config.train.lr_drop_epoch = 3
  spe = optim.steps_per_epoch(config)
  assert spe == config.data.train.sample_per_epoch // config.train.global_batch_size
  schedule = optim.learning_rate_schedule(config, 1e-3)
  # StepLR(step_size=3) stepped per epoch: epochs 1-3 at lr, 4-6 at lr/10, 7-9 at lr/100.
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(3 * spe - 1)) == pytest.approx(1e-3)
  assert float(schedule(3 * spe)) == pytest.approx(1e-4)
  assert float(schedule(6 * spe)) == pytest.approx(1e-5)


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero_at_the_last_step():
  config = load_config("fartrack", "smoke")
  config.data.train.sample_per_epoch = 100 * config.train.global_batch_size
  config.train.epoch = 2
  config.train.scheduler.type = "cosine"
  config.train.scheduler.warmup_steps = 20
  schedule = optim.learning_rate_schedule(config, 1e-3)
  # 200 steps: 0 -> 1e-3 over steps 0..20, then 1e-3 * (1 + cos(pi * (s - 20) / 180)) / 2.
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(10)) == pytest.approx(5e-4)
  assert float(schedule(20)) == pytest.approx(1e-3)
  assert float(schedule(110)) == pytest.approx(5e-4, rel=1e-4)
  assert float(schedule(200)) == pytest.approx(0.0, abs=1e-9)
  config.train.scheduler.type = "linear"
  with pytest.raises(ValueError, match="train.scheduler.type='linear'"):
    config_lib.validate_config(config)


def test_epoch_shorter_than_a_batch_is_rejected():
  config = load_config("fartrack", "smoke")
  config.data.train.sample_per_epoch = 1
  with pytest.raises(ValueError, match="sample_per_epoch"):
    optim.steps_per_epoch(config)


def _torch_adamw_step(p, g, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
  """torch.optim.AdamW, first step, written out: decay by lr * wd, then the bias-corrected Adam step."""
  p = p * (1 - lr * wd)
  m = (1 - b1) * g
  v = (1 - b2) * g * g
  m_hat = m / (1 - b1)
  v_hat = v / (1 - b2)
  return p - lr * m_hat / (np.sqrt(v_hat) + eps)


@pytest.mark.slow
def test_one_update_equals_torch_adamw_per_group_with_clipping():
  config = load_config("fartrack", "smoke")
  config.train.lr, config.train.backbone_multiplier, config.train.weight_decay = 1e-2, 0.1, 0.05
  config.train.grad_clip_norm = 0.5
  params = _params(config)
  rng = np.random.default_rng(0)
  grads = jax.tree_util.tree_map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
  tx, _ = optim.make_optimizer(config, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = jax.tree_util.tree_map(lambda p, u: np.asarray(p + u), params, updates)

  # clip_grad_norm_ over the params that get a gradient (the frozen ones get none in PyTorch).
  labels = optim.param_labels(params, config)
  trained = [g for g, l in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(labels)) if l != "frozen"]
  norm = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in trained))
  scale = min(1.0, 0.5 / norm)
  for path, lr in ((("layer_0", "attn", "qkv", "kernel"), 1e-3), (("word_embeddings",), 1e-2),
                   (("layer_1", "mlp", "fc1", "bias"), 1e-2)):
    p, g, n = params, grads, new
    for k in path:
      p, g, n = p[k], g[k], n[k]
    expected = _torch_adamw_step(p.astype(np.float64), g.astype(np.float64) * scale, lr, 0.05)
    np.testing.assert_allclose(n, expected, rtol=0, atol=2e-6)  # float32 arithmetic on O(1) values
  np.testing.assert_array_equal(new["cls_token"], params["cls_token"])
  np.testing.assert_array_equal(new["pos_embed"], params["pos_embed"])


@pytest.mark.parametrize("lr, wd", [(4e-4, 1e-4), (4e-6, 0.05)])  # stage 1's full-lr groups; stage 3
def test_decay_rounds_the_weight_before_the_step_is_added_as_torch_does(lr, wd):
  # torch.optim.AdamW: `param.mul_(1 - lr * wd)` (a float32 factor, the product rounded to float32), then
  # `param.addcdiv_(...)` adds the Adam step and rounds again. Written out in numpy float32 (no fused
  # multiply-add): for weights of magnitude 2-4 the decay is below or about one ulp, so rounding
  # `param + decay + step` once instead lands one ulp away in about a quarter of them, every step.
  rng = np.random.default_rng(0)
  p = (rng.uniform(2, 4, 4096) * rng.choice([-1, 1], 4096)).astype(np.float32)
  g = rng.standard_normal(4096).astype(np.float32)
  tx = optim.torch_adamw(lambda count: lr, wd)
  updates, _ = jax.jit(tx.update)(g, tx.init(p), p)
  ours = np.asarray(jax.jit(lambda p, u: p + u)(p, updates))

  factor = np.float32(1 - lr * wd)
  decayed = p * factor  # float32 * float32: rounded to float32
  assert decayed.dtype == np.float32
  adam = g.astype(np.float64) / (np.abs(g.astype(np.float64)) + 1e-8)  # first step: m_hat / (sqrt(v_hat) + eps)
  expected = decayed + np.float32(-lr) * adam.astype(np.float32)
  assert expected.dtype == np.float32
  ulp = np.spacing(np.abs(p))
  assert np.max(np.abs(ours - expected) / ulp) <= 1
  # The Adam step itself is rounded in another order (a fused multiply-add here): a rare tie may differ.
  assert np.mean(ours != expected) < 0.01
