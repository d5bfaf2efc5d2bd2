"""Converter: key map, round trips (in memory and through .pth.tar / orbax files), remaps, MAE init, errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fartrack_jax import checkpoints
from fartrack_jax import convert
from fartrack_jax import model as model_lib
from tests.conftest import ROOT, init, load_config

torch = pytest.importorskip("torch", reason="the converter's file paths need torch (requirements-torch.txt)")

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")


def _leaves(tree):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_trees_equal(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert la.keys() == lb.keys()
  for k in la:
    np.testing.assert_array_equal(la[k], lb[k], err_msg=k)


@pytest.mark.parametrize("stage", STAGES)
def test_round_trip_preserves_every_key(stage):
  config = load_config(stage)
  _, params = init(config, seed=1)
  spec = model_lib.ModelSpec.from_config(config)
  sd = convert.flax_to_torch(params, spec)
  assert len(sd) == len(_leaves(params))
  _, other = init(config, seed=2)
  back, report = convert.torch_to_flax(sd, spec, other)
  _assert_trees_equal(params, back)
  assert not report.unused and not report.left_at_init


def test_round_trip_through_files(tmp_path):
  from fartrack_jax import torch_io
  config = load_config("fartrack_sparse")
  _, params = init(config, seed=3)
  spec = model_lib.ModelSpec.from_config(config)
  original = convert.flax_to_torch(params, spec)
  src = str(tmp_path / "src.pth.tar")
  torch_io.save_state_dict(src, original)
  report = convert.convert_checkpoint_to_flax(src, config, str(tmp_path / "params"))
  assert len(report.mapped) == len(original)
  loaded, meta = checkpoints.load_params_for(str(tmp_path / "params"), config)
  assert meta["stage"] == "fartrack_sparse" and meta["depth"] == config.model.depth
  _assert_trees_equal(params, loaded)
  out = str(tmp_path / "back.pth.tar")
  convert.convert_params_to_torch(str(tmp_path / "params"), config, out)
  net = torch.load(out, map_location="cpu", weights_only=True)["net"]
  assert net.keys() == original.keys()
  for k in original:
    np.testing.assert_array_equal(net[k].numpy(), original[k], err_msg=k)


def test_missing_key_and_shape_mismatch_are_refused_by_name():
  config = load_config("fartrack")
  _, params = init(config)
  spec = model_lib.ModelSpec.from_config(config)
  sd = convert.flax_to_torch(params, spec)
  del sd["backbone.blocks.0.attn.qkv.weight"]
  sd["backbone.output_bias"] = np.zeros(7, np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax(sd, spec, params)
  assert "missing key backbone.blocks.0.attn.qkv.weight" in str(e.value)
  assert "shape mismatch for backbone.output_bias" in str(e.value)


def test_unread_params_may_be_absent_and_are_reported_left_at_init():
  config = load_config("fartrack_sparse")
  _, params = init(config)
  spec = model_lib.ModelSpec.from_config(config)
  sd = convert.flax_to_torch(params, spec)
  for k in ("backbone.cls_token", "backbone.pos_embed", "backbone.prev_position_embeddings.weight"):
    del sd[k]
  sd["backbone.something_else"] = np.zeros(3, np.float32)
  _, report = convert.torch_to_flax(sd, spec, params)
  assert set(report.left_at_init) == {"backbone.cls_token", "backbone.pos_embed",
                                      "backbone.prev_position_embeddings.weight"}
  assert report.unused == ["backbone.something_else"]


def test_distill_checkpoint_into_sparse_copies_norm_into_masknorm():
  distill = load_config("fartrack_distill")
  _, dparams = init(distill, seed=4)
  dsd = convert.flax_to_torch(dparams, model_lib.ModelSpec.from_config(distill))
  assert not any("masknorm" in k for k in dsd)
  sparse = load_config("fartrack_sparse")
  _, sparams = init(sparse, seed=5)
  converted, report = convert.torch_to_flax(dsd, model_lib.ModelSpec.from_config(sparse), sparams)
  for layer in ("layer_0", "layer_1"):
    for n in ("1", "2"):
      np.testing.assert_array_equal(converted[layer][f"masknorm{n}"]["scale"], dparams[layer][f"norm{n}"]["scale"])
      np.testing.assert_array_equal(converted[layer][f"masknorm{n}"]["bias"], dparams[layer][f"norm{n}"]["bias"])
  assert any("masknorm1.norm.weight" in d for d in report.derived)
  # A sparse checkpoint keeps its own (trained) masked norms.
  ssd = convert.flax_to_torch(sparams, model_lib.ModelSpec.from_config(sparse))
  _, other = init(sparse, seed=6)
  back, _ = convert.torch_to_flax(ssd, model_lib.ModelSpec.from_config(sparse), other)
  np.testing.assert_array_equal(back["layer_0"]["masknorm1"]["scale"], sparams["layer_0"]["masknorm1"]["scale"])


def test_deeper_checkpoint_into_shallower_variant_keeps_the_first_layers():
  deep = load_config("fartrack_distill")
  deep.model.num_blocks, deep.model.extension, deep.model.depth, deep.model.logit_layers = 2, 2, 4, (2,)
  _, params = init(deep)
  sd = convert.flax_to_torch(params, model_lib.ModelSpec.from_config(deep))
  shallow = load_config("fartrack_distill")
  shallow.model.num_blocks, shallow.model.extension, shallow.model.depth, shallow.model.logit_layers = 2, 2, 3, (2,)
  _, init_shallow = init(shallow)
  converted, report = convert.torch_to_flax(sd, model_lib.ModelSpec.from_config(shallow), init_shallow)
  _assert_trees_equal(converted, convert.truncate_layers(params, 3))
  assert report.unused and all(k.startswith("backbone.extension.1.") for k in report.unused)


def test_bicubic_resize_matches_torch_interpolate():
  rng = np.random.default_rng(0)
  grid = rng.standard_normal((1, 14 * 14, 8)).astype(np.float32)
  t = torch.from_numpy(grid).transpose(1, 2).reshape(1, 8, 14, 14)
  for new in (7, 14, 4, 20):
    ref = torch.nn.functional.interpolate(t, size=(new, new), mode="bicubic", align_corners=False)
    ref = ref.flatten(2).transpose(1, 2).numpy()
    # torch sums the 16 taps in float32, ours in float64: a few float32 ulps of |values| ~ 3.
    np.testing.assert_allclose(convert.resize_pos_embed(grid, new), ref, atol=5e-6)


def _fake_mae(spec, num_blocks, seed=0):
  rng = np.random.default_rng(seed)
  d, hidden = spec.embed_dim, int(spec.embed_dim * spec.mlp_ratio)
  mae = {"cls_token": rng.standard_normal((1, 1, d)), "pos_embed": rng.standard_normal((1, 1 + 14 * 14, d)),
         "patch_embed.proj.weight": rng.standard_normal((d, 3, spec.patch_size, spec.patch_size)),
         "patch_embed.proj.bias": rng.standard_normal(d), "mask_token": rng.standard_normal((1, 1, d))}
  for b in range(num_blocks):
    for n in ("norm1", "norm2"):
      mae[f"blocks.{b}.{n}.weight"] = rng.standard_normal(d)
      mae[f"blocks.{b}.{n}.bias"] = rng.standard_normal(d)
    for mod, shape in (("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)), ("mlp.fc1", (hidden, d)),
                       ("mlp.fc2", (d, hidden))):
      mae[f"blocks.{b}.{mod}.weight"] = rng.standard_normal(shape)
      mae[f"blocks.{b}.{mod}.bias"] = rng.standard_normal(shape[0])
  return {f"module.{k}": v.astype(np.float32) for k, v in mae.items()}


def test_mae_init_copies_last_blocks_into_extension_and_resizes_positions():
  config = load_config("fartrack")
  config.model.num_blocks, config.model.extension, config.model.depth = 3, 2, 5
  config.model.pretrain_grid = 14
  net, fresh = init(config)
  spec = net.spec
  mae = _fake_mae(spec, num_blocks=3)
  params, report = convert.mae_to_flax(mae, spec, fresh)
  strip = lambda k: mae[f"module.{k}"]
  # Blocks 1 and 2 (the last two) become extension layers 3 and 4.
  np.testing.assert_array_equal(params["layer_3"]["attn"]["qkv"]["kernel"], strip("blocks.1.attn.qkv.weight").T)
  np.testing.assert_array_equal(params["layer_4"]["mlp"]["fc1"]["kernel"], strip("blocks.2.mlp.fc1.weight").T)
  np.testing.assert_array_equal(params["layer_0"]["norm1"]["scale"], strip("blocks.0.norm1.weight"))
  grid = strip("pos_embed")[:, 1:]
  np.testing.assert_array_equal(params["pos_embed_x"], convert.resize_pos_embed(grid, spec.search_grid))
  np.testing.assert_array_equal(params["pos_embed_z0"], convert.resize_pos_embed(grid, spec.template_grid))
  # Tracker-only params stay at init; MAE's own extras are reported unused.
  np.testing.assert_array_equal(params["identity"], fresh["identity"])
  np.testing.assert_array_equal(params["word_embeddings"], fresh["word_embeddings"])
  assert "identity" in report.left_at_init and "mask_token" in report.unused


def test_mae_with_too_few_blocks_is_refused():
  config = load_config("fartrack")
  config.model.num_blocks, config.model.extension, config.model.depth = 3, 1, 4
  net, fresh = init(config)
  with pytest.raises(convert.ConversionError, match="2 blocks"):
    convert.mae_to_flax(_fake_mae(net.spec, num_blocks=2), net.spec, fresh)


def _run_script(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "convert_torch.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_cli_converts_and_refuses_with_a_clear_message(tmp_path):
  from fartrack_jax import torch_io
  config = load_config("fartrack_distill")
  _, params = init(config)
  sd = convert.flax_to_torch(params, model_lib.ModelSpec.from_config(config))
  good = str(tmp_path / "good.pth.tar")
  torch_io.save_state_dict(good, sd)
  cfg_arg = "--config=configs/fartrack_distill.py:variant=smoke"
  ok = _run_script(cfg_arg, f"--checkpoint={good}", f"--output={tmp_path / 'out'}")
  assert ok.returncode == 0, ok.stderr
  assert "unused checkpoint keys (0)" in ok.stdout and os.path.isdir(tmp_path / "out")
  del sd["backbone.norm.weight"]
  bad = str(tmp_path / "bad.pth.tar")
  torch_io.save_state_dict(bad, sd)
  refused = _run_script(cfg_arg, f"--checkpoint={bad}", f"--output={tmp_path / 'out2'}")
  assert refused.returncode != 0
  assert "missing key backbone.norm.weight" in refused.stderr
  assert not os.path.exists(tmp_path / "out2")  # nothing half-written


@pytest.mark.slow
def test_to_torch_reads_a_training_workdir_or_its_checkpoints_folder(tmp_path):
  from fartrack_jax import torch_io
  from fartrack_jax.training import trainer
  from tests import train_fakes
  config = load_config("fartrack")
  config.run.max_steps = 1
  workdir = str(tmp_path / "run")
  trainer.train(config, workdir, data_fn=train_fakes.make_data_fn(), async_checkpoints=False)
  trained, _, _ = checkpoints.load_train_params(workdir)
  spec = model_lib.ModelSpec.from_config(config)
  for i, source in enumerate((workdir, os.path.join(workdir, "checkpoints"))):
    output = str(tmp_path / f"out{i}.pth.tar")
    assert convert.convert_params_to_torch(source, config, output) > 0
    _, written = torch_io.load_state_dict(output)
    expected = convert.flax_to_torch(trained, spec)
    assert written.keys() == expected.keys()
    for key, value in expected.items():
      np.testing.assert_array_equal(written[key], value, err_msg=key)
  empty = tmp_path / "empty"
  empty.mkdir()
  refused = _run_script("--direction=to_torch", "--config=configs/fartrack.py:variant=smoke",
                        f"--params={empty}", f"--output={tmp_path / 'x.pth.tar'}")
  assert refused.returncode == 1 and "Traceback" not in refused.stderr
  assert refused.stderr.strip().startswith("error:") and str(empty) in refused.stderr
  assert len(refused.stderr.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / "x.pth.tar")


def test_a_truncated_checkpoint_is_reported_as_corrupt_not_as_needing_pickle(tmp_path):
  from fartrack_jax import torch_io
  config = load_config("fartrack_sparse")
  _, params = init(config)
  whole = tmp_path / "whole.pth.tar"
  torch_io.save_state_dict(str(whole), convert.flax_to_torch(params, model_lib.ModelSpec.from_config(config)))
  data = whole.read_bytes()
  cut = tmp_path / "cut.pth.tar"
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match="corrupt or truncated") as caught:
    torch_io.load_state_dict(str(cut))
  assert f"{len(data) // 2:,} bytes" in str(caught.value) and "allow_pickle" not in str(caught.value)
  with pytest.raises(ValueError, match="corrupt or truncated"):
    torch_io.load_state_dict(str(cut), allow_pickle=True)
  (tmp_path / "empty.pth.tar").write_bytes(b"")
  with pytest.raises(ValueError, match="empty"):
    torch_io.load_state_dict(str(tmp_path / "empty.pth.tar"))
  assert torch_io.load_state_dict(str(whole))[0] == "net"
