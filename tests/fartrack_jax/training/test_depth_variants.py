"""Nano/Pico depth variants of a distilled Tiny: the first 10/6 layers of the same params, loadable by the
depth's configs (tracker, evaluator, the sparse stage)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fartrack_jax import checkpoints, convert
from fartrack_jax import model as model_lib
from fartrack_jax.training import depth_variants
from tests.conftest import ROOT, load_config


@pytest.fixture(scope="module")
def distilled_tiny(tmp_path_factory):
  config = load_config("fartrack_distill", "variant=tiny")
  params = jax.tree_util.tree_map(np.asarray, model_lib.init_params(model_lib.build_model(config),
                                                                    jax.random.PRNGKey(4)))
  path = str(tmp_path_factory.mktemp("distill") / "tiny")
  checkpoints.save_params(path, params, convert.metadata_for(config, "", "init"))
  return config, params, path


@pytest.mark.parametrize("depth,variant", [(10, "nano"), (6, "pico")])
def test_variant_is_the_first_layers_of_the_distilled_model(tmp_path, distilled_tiny, depth, variant):
  config, params, path = distilled_tiny
  out = str(tmp_path / variant)
  meta = depth_variants.save_variant(path, config, depth, out)
  assert meta["depth"] == depth and meta["variant"] == variant and meta["exported_from_depth"] == 15
  # Loads with the depth's own config, and holds exactly layers 0..depth-1 of the source.
  exported, _ = checkpoints.load_params_for(out, load_config("fartrack_distill", f"variant={variant}"))
  assert sorted(k for k in exported if k.startswith("layer_")) == sorted(f"layer_{i}" for i in range(depth))
  for key, value in exported.items():
    for a, b in zip(jax.tree_util.tree_leaves(value), jax.tree_util.tree_leaves(params[key])):
      np.testing.assert_array_equal(a, b)
  # Layers 12+ are the extension blocks: Nano/Pico (<= 12 layers) keep none of them.
  assert f"layer_{depth}" not in exported and "layer_14" in params


@pytest.mark.slow
def test_sparse_nano_starts_from_the_nano_variant(tmp_path, distilled_tiny):
  config, params, path = distilled_tiny
  out = str(tmp_path / "nano")
  depth_variants.save_variant(path, config, 10, out)
  sparse_nano = load_config("fartrack_sparse", "variant=nano")
  init = jax.tree_util.tree_map(np.asarray, model_lib.init_params(model_lib.build_model(sparse_nano),
                                                                  jax.random.PRNGKey(0)))
  loaded, report = convert.load_pretrained(out, sparse_nano, init)
  np.testing.assert_array_equal(loaded["layer_9"]["masknorm2"]["scale"], params["layer_9"]["norm2"]["scale"])
  np.testing.assert_array_equal(loaded["layer_9"]["mlp"]["fc1"]["kernel"], params["layer_9"]["mlp"]["fc1"]["kernel"])
  assert not report.unused


def test_variant_refuses_a_deeper_depth_and_an_existing_output(tmp_path, distilled_tiny):
  config, _, path = distilled_tiny
  nano = depth_variants.variant_config(config, 10)
  with pytest.raises(ValueError, match="out of range"):
    depth_variants.variant_config(config, 16)
  out = str(tmp_path / "nano")
  depth_variants.save_variant(path, config, 10, out)
  with pytest.raises(ValueError, match="has 10 layers; cannot export depth 12"):
    depth_variants.save_variant(out, nano, 12, str(tmp_path / "deeper"))
  with pytest.raises(FileExistsError):
    depth_variants.save_variant(path, config, 6, out)


@pytest.mark.slow
def test_script_exports_and_reports_errors(tmp_path, distilled_tiny):
  _, _, path = distilled_tiny
  script = os.path.join(ROOT, "scripts", "export_variant.py")
  config = os.path.join(ROOT, "configs", "fartrack_distill.py")
  ok = subprocess.run([sys.executable, script, "--config", config, "--checkpoint", path, "--depth", "6",
                       "--output", str(tmp_path / "pico")], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "depth 6 (from depth 15)" in ok.stdout
  bad = subprocess.run([sys.executable, script, "--config", config, "--checkpoint", str(tmp_path / "missing"),
                        "--depth", "6", "--output", str(tmp_path / "x")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
  assert bad.returncode != 0 and "no checkpoint at" in bad.stderr + bad.stdout
