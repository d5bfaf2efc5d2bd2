"""Model behaviour: shapes, jit, depth truncation, masked norm, masks, max-norm, drop-path, bf16."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fartrack_jax import convert
from fartrack_jax import model as model_lib
from tests.conftest import FIXTURES, init, load_config, random_inputs

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")


@pytest.mark.parametrize("stage", STAGES)
def test_param_names_and_shapes_equal_the_originals(stage):
  # original_param_shapes.json was written by running the original code:
  #   python scripts/parity_check.py --torch-repo PATH --config configs/<stage>.py:variant=tiny \
  #       --write-param-shapes tests/fixtures/original_param_shapes.json
  with open(os.path.join(FIXTURES, "original_param_shapes.json")) as f:
    original = json.load(f)[stage]
  config = load_config(stage, "variant=tiny")
  net = model_lib.build_model(config)
  shapes = jax.eval_shape(lambda: model_lib.init_params(net, jax.random.key(0)))
  ours = convert.flax_to_torch(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), shapes),
                               model_lib.ModelSpec.from_config(config))
  assert {k: list(v.shape) for k, v in ours.items()} == original


@pytest.mark.parametrize("variant,depth", [("tiny", 15), ("nano", 10), ("pico", 6)])
def test_variants_build_their_depth(variant, depth):
  config = load_config("fartrack_sparse", f"variant={variant}")
  net = model_lib.build_model(config)
  shapes = jax.eval_shape(lambda: model_lib.init_params(net, jax.random.key(0)))
  layers = sorted(int(k.split("_")[1]) for k in shapes if k.startswith("layer_"))
  assert layers == list(range(depth))


def test_tiny_config_reproduces_the_originals_hard_coded_sizes():
  # The original's pruning code hard-codes 49 tokens a template, a 14x14 search grid, 445 tokens, and reads
  # the centre search token as row -200 + 7 * 14 + 7 of the attention map.
  spec = model_lib.ModelSpec.from_config(load_config("fartrack_sparse", "variant=tiny"))
  assert spec.tokens_per_template == 49
  assert spec.search_grid == 14
  assert spec.num_tokens == 445
  assert spec.center_search_token == spec.num_tokens - 200 + 7 * 14 + 7
  assert spec.vocab_size == 605 and spec.command_tokens == (600, 601, 602, 603)


# The sparse stage in the full run only: its model is the largest of the three to compile.
@pytest.mark.parametrize("stage", ["fartrack", "fartrack_distill",
                                   pytest.param("fartrack_sparse", marks=pytest.mark.slow)])
def test_jit_equals_eager(stage):
  config = load_config(stage)
  net, params = init(config)
  templates, search = random_inputs(net.spec)
  fn = lambda p, t, s: net.apply({"params": p}, t, s)
  jitted = jax.jit(fn)(params, templates, search)
  with jax.disable_jit():
    eager = fn(params, templates, search)
  for k in jitted:
    if jitted[k].dtype == bool:
      np.testing.assert_array_equal(jitted[k], eager[k])
    else:  # fp32; XLA may fuse differently from op-by-op execution.
      np.testing.assert_allclose(jitted[k], eager[k], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the fast tier compiles with XLA:CPU optimisations off (conftest), not as users do
@pytest.mark.parametrize("stage", ["fartrack", "fartrack_sparse"])
def test_compiled_init_gives_the_eager_inits_values_bit_for_bit(stage):
  """`init_params` (one compiled program) against flax's eager `init`: every param identical. A runs from a
  random init (the quick start's) is chaotic; one ulp in one table changed its held-out AO by 3 points."""
  net = model_lib.build_model(load_config(stage), "float32")
  templates, search = model_lib.dummy_inputs(net.spec)
  eager = net.init(jax.random.key(5), templates, search)["params"]
  compiled = model_lib.init_params(net, jax.random.key(5))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(eager), jax.tree_util.tree_leaves(compiled)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


def test_output_shapes_per_stage():
  for stage in STAGES:
    config = load_config(stage)
    net, params = init(config)
    s = net.spec
    out = net.apply({"params": params}, *random_inputs(s, batch=3))
    assert out["coord_logits"].shape == (3, 4, s.vocab_size)
    if stage == "fartrack_distill":
      assert out["layer_logits"].shape == (len(set(s.logit_layers) | {s.depth - 1}), 3, 4, s.vocab_size)
      np.testing.assert_array_equal(out["layer_logits"][-1], out["coord_logits"])
    if stage == "fartrack_sparse":
      assert out["keep_masks"].shape == (3, len(s.track_prune_ratios), s.tokens_per_template)


def test_depth_variant_runs_the_first_layers_of_the_deeper_model():
  # A 3-layer model given the first 3 layers of a 4-layer model must equal the 4-layer model with its last
  # layer made an identity (zero attention and MLP output projections).
  deep_cfg = load_config("fartrack", "variant=smoke")
  deep_cfg.model.num_blocks, deep_cfg.model.extension, deep_cfg.model.depth = 2, 2, 4
  shallow_cfg = load_config("fartrack", "variant=smoke")
  shallow_cfg.model.num_blocks, shallow_cfg.model.extension, shallow_cfg.model.depth = 2, 2, 3
  deep, params = init(deep_cfg)
  shallow = model_lib.build_model(shallow_cfg)
  truncated = convert.truncate_layers(params, 3)
  assert sorted(k for k in truncated if k.startswith("layer_")) == ["layer_0", "layer_1", "layer_2"]
  identity_last = jax.tree_util.tree_map(lambda x: x, params)
  for mod in ("proj",):
    identity_last["layer_3"]["attn"][mod] = jax.tree_util.tree_map(jnp.zeros_like, params["layer_3"]["attn"][mod])
  identity_last["layer_3"]["mlp"]["fc2"] = jax.tree_util.tree_map(jnp.zeros_like, params["layer_3"]["mlp"]["fc2"])
  inputs = random_inputs(deep.spec)
  a = shallow.apply({"params": truncated}, *inputs)["coord_logits"]
  b = deep.apply({"params": identity_last}, *inputs)["coord_logits"]
  np.testing.assert_allclose(a, b, atol=1e-5)
  c = deep.apply({"params": params}, *inputs)["coord_logits"]
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3  # the 4th layer does matter


def test_masked_layer_norm_hand_computed():
  x = jnp.array([[[1.0, 2.0, 3.0, 6.0], [4.0, 4.0, 8.0, 0.0]]])
  mask = jnp.array([[True, False]])
  scale = jnp.array([1.0, 2.0, 1.0, 1.0])
  bias = jnp.array([0.5, 0.0, 0.0, -1.0])
  y = model_lib.masked_layer_norm(x, mask, scale, bias, eps=1e-5)
  # Visible token: mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5.
  expected = (np.array([1.0, 2.0, 3.0, 6.0]) - 3.0) / np.sqrt(3.5 + 1e-5) * np.array([1, 2, 1, 1]) + \
      np.array([0.5, 0, 0, -1])
  np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)
  # Masked token: x * 0 has mean 0 and variance 0, so it normalises to 0 and comes out as the bias.
  np.testing.assert_allclose(y[0, 1], bias, atol=0)


def test_keep_lowest_pruned_hand_computed():
  scores = jnp.array([[0.3, 0.1, 0.2, 0.9, 0.5]])
  np.testing.assert_array_equal(model_lib.keep_lowest_pruned(scores, 2), [[True, False, False, True, True]])
  np.testing.assert_array_equal(model_lib.keep_lowest_pruned(scores, 0), [[True] * 5])


def test_tracking_keep_masks_prune_25_50_75_90_percent_of_the_newest_template():
  spec = model_lib.ModelSpec.from_config(load_config("fartrack_sparse", "variant=tiny"))
  attention = jax.random.uniform(jax.random.key(0), (2, spec.num_template_tokens))
  masks = model_lib.track_keep_masks(attention, spec)
  assert masks.shape == (2, 4, 49)
  # int(49 * r) tokens pruned: 12, 24, 36, 44.
  np.testing.assert_array_equal(masks.sum(-1), [[37, 25, 13, 5]] * 2)
  newest = np.asarray(attention[:, -49:])
  for b in range(2):  # the kept tokens are the highest-attended ones of the newest template
    kept = newest[b][np.asarray(masks[b, 0])]
    pruned = newest[b][~np.asarray(masks[b, 0])]
    assert kept.min() > pruned.max()


def test_training_keep_mask_prunes_older_templates_only():
  spec = model_lib.ModelSpec.from_config(load_config("fartrack_sparse", "variant=tiny"))
  attention = jax.random.uniform(jax.random.key(1), (2, spec.num_template_tokens))
  mask = np.asarray(model_lib.train_keep_mask(attention, spec))
  assert mask.shape == (2, 445)
  per_template = mask[:, :245].reshape(2, 5, 49)
  np.testing.assert_array_equal(per_template[:, :4].sum(-1), 37)
  assert per_template[:, 4].all() and mask[:, 245:].all()


def _sparse_smoke():
  config = load_config("fartrack_sparse")
  net, params = init(config)
  return config, net, params


def test_masked_tokens_are_invisible_to_the_rest():
  # Changing the pixels under a masked template token must not move the logits; under a visible one it must.
  _, net, params = _sparse_smoke()
  s = net.spec
  templates, search = random_inputs(s, batch=1)
  mask = np.ones((1, s.num_tokens), bool)
  mask[0, 0] = False  # token 0 = top-left patch of template slot 0
  p = s.patch_size
  masked_change = templates.copy()
  masked_change[0, 0, :p, :p] += 3.0
  visible_change = templates.copy()
  visible_change[0, 0, :p, p:2 * p] += 3.0
  run = lambda t: np.asarray(net.apply({"params": params}, t, search, token_mask=mask)["coord_logits"])
  base = run(templates)
  np.testing.assert_allclose(run(masked_change), base, atol=1e-6)
  assert np.abs(run(visible_change) - base).max() > 1e-4
  # The same mask given in the original's [B, N, N] form gives the same result.
  mask3 = np.broadcast_to(mask[:, None, :], (1, s.num_tokens, s.num_tokens))
  full = np.asarray(net.apply({"params": params}, templates, search, token_mask=mask3)["coord_logits"])
  np.testing.assert_allclose(full, base, atol=1e-6)


def test_training_mode_keeps_a_given_partial_mask_and_generates_from_a_full_one():
  _, net, params = _sparse_smoke()
  s = net.spec
  templates, search = random_inputs(s, batch=2)
  partial = np.ones((2, s.num_tokens), bool)
  partial[1, 1] = False
  out = net.apply({"params": params}, templates, search, token_mask=partial, prune_mode="train")
  np.testing.assert_array_equal(out["keep_masks"], partial)  # batch-wide test, as the original
  full = net.apply({"params": params}, templates, search, token_mask=np.ones_like(partial), prune_mode="train")
  expected = model_lib.train_keep_mask(full["template_attention"], s)
  np.testing.assert_array_equal(full["keep_masks"], expected)


def test_max_norm_renormalises_command_embeddings_in_lookup_and_projection():
  config, net, params = _sparse_smoke()
  s = net.spec
  inputs = random_inputs(s)
  rows = np.asarray(s.command_tokens)
  table = np.asarray(params["word_embeddings"]).copy()
  table[rows] *= 5.0 / np.linalg.norm(table[rows], axis=-1, keepdims=True)  # norms 5: renormed to 1
  scaled = table.copy()
  scaled[rows] *= 3.0  # norms 15: renormed to the same unit rows
  run = lambda t: np.asarray(net.apply({"params": {**params, "word_embeddings": t}}, *inputs)["coord_logits"])
  np.testing.assert_allclose(run(table), run(scaled), atol=1e-5)
  # Without max-norm (stage 1) the same scaling changes the output.
  config1 = load_config("fartrack")
  net1, params1 = init(config1)
  t1 = np.asarray(params1["word_embeddings"]).copy()
  t1s = t1.copy()
  t1s[rows] *= 3.0
  run1 = lambda t: np.asarray(net1.apply({"params": {**params1, "word_embeddings": t}}, *inputs)["coord_logits"])
  assert np.abs(run1(t1) - run1(t1s)).max() > 1e-3


def test_drop_path_is_per_sample_and_off_when_deterministic():
  layer = model_lib.DropPath(0.5)
  x = jnp.ones((64, 3, 2))
  y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  per_sample = np.asarray(y).reshape(64, -1)
  assert set(np.unique(per_sample)) <= {0.0, 2.0}
  assert np.all(per_sample == per_sample[:, :1])  # a whole sample is dropped or kept
  assert 10 < (per_sample[:, 0] == 0).sum() < 54
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)


def test_training_forward_uses_drop_path():
  config = load_config("fartrack")
  # Rates are linspace(0, rate, num_blocks): with one block it is 0, so use two.
  config.model.num_blocks, config.model.extension = 2, 0
  config.train.drop_path_rate = 0.5
  net, params = init(config)
  inputs = random_inputs(net.spec)
  eval_out = net.apply({"params": params}, *inputs)["coord_logits"]
  train_out = net.apply({"params": params}, *inputs, deterministic=False,
                        rngs={"dropout": jax.random.key(3)})["coord_logits"]
  assert np.abs(np.asarray(eval_out) - np.asarray(train_out)).max() > 1e-4


@pytest.mark.slow
def test_bfloat16_compute_stays_close_to_float32():
  config = load_config("fartrack_sparse")
  net32, params = init(config)
  net16 = model_lib.build_model(config, "bfloat16")
  inputs = random_inputs(net32.spec)
  a = np.asarray(net32.apply({"params": params}, *inputs)["coord_logits"])
  b = np.asarray(net16.apply({"params": params}, *inputs)["coord_logits"], dtype=np.float32)
  # bf16 keeps 8 mantissa bits: allow 5 % of the logit range.
  assert np.abs(a - b).max() < 0.05 * (np.abs(a).max() + 1)


def test_decode_boxes_hand_computed():
  spec = model_lib.ModelSpec(bins=4, range=2)  # 8 coordinate bins, centres -0.5 + k / 4
  logits = np.full((1, 4, spec.vocab_size), -1e9, np.float32)
  for i, k in enumerate([0, 3, 5, 7]):
    logits[0, i, k] = 0.0  # one-hot: argmax and expectation agree on bin k
  boxes = np.asarray(model_lib.decode_boxes(jnp.asarray(logits), spec))
  by_argmax = (np.array([0, 3, 5, 7]) + 0.5) / 3 - 0.5
  by_expectation = -0.5 + np.array([0, 3, 5, 7]) / 4
  np.testing.assert_allclose(boxes[0], (by_argmax + by_expectation) / 2, rtol=1e-6)
