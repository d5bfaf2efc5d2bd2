"""Parity with the original PyTorch FARTrack.

In CI (no original code): fixtures made once by running the original reproduce through our converter and
model. Each holds a reduced random-init model of the original (width 48, 5 blocks + 3 extension blocks,
real token geometry: 5 templates of 112x112, a 224x224 search, 445 tokens, 300 x 2 bins), with weights
rounded to float16 values so both sides compute on identical float32 numbers, uint8 inputs, the sparse
stage's key mask (two samples there, one elsewhere), and the original's outputs. They were written with (FARTrack checkout at commit 5d3e4b9):

  python scripts/parity_check.py --torch-repo PATH --config configs/fartrack.py:variant=tiny \
      --config.model.embed_dim=48 --config.model.num_blocks=5 --config.model.depth=8 \
      --batch 1 --write-fixture tests/fixtures/parity_fartrack.npz
  python scripts/parity_check.py --torch-repo PATH --config configs/fartrack_distill.py:variant=tiny \
      --config.model.embed_dim=48 --config.model.num_blocks=5 --config.model.depth=8 \
      --config.model.logit_layers="(4,5,6,7)" --batch 1 --write-fixture tests/fixtures/parity_fartrack_distill.npz
  python scripts/parity_check.py --torch-repo PATH --config configs/fartrack_sparse.py:variant=tiny \
      --config.model.embed_dim=48 --config.model.num_blocks=5 --config.model.depth=8 \
      --write-fixture tests/fixtures/parity_fartrack_sparse.npz

With FARTRACK_TORCH_REPO pointing at a checkout, the full-size comparison (Tiny/Nano/Pico, every stage)
runs live against it.
"""

import os

import jax
import ml_collections
import numpy as np
import pytest

from fartrack_jax import convert
from fartrack_jax import model as model_lib
from fartrack_jax import parity
from tests.conftest import FIXTURES, load_config

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")


# The sparse stage in the full run only: its model is the largest of the three to compile.
@pytest.mark.parametrize("stage", ["fartrack", "fartrack_distill",
                                   pytest.param("fartrack_sparse", marks=pytest.mark.slow)])
def test_converted_model_reproduces_the_originals_outputs(stage):
  meta, state_dict, inputs, expected = parity.read_fixture(os.path.join(FIXTURES, f"parity_{stage}.npz"))
  config = ml_collections.ConfigDict(meta["overrides"])
  assert config.stage == stage
  spec = model_lib.ModelSpec.from_config(config)
  init = model_lib.init_params(model_lib.build_model(config), jax.random.key(0))
  params, report = convert.torch_to_flax(state_dict, spec, init)
  assert not report.unused and not report.left_at_init
  ours = parity.run_ours(params, config, inputs)
  result = parity.compare(expected, ours, config)
  print(result.table())
  assert result.passed, result.table()
  # The fixture must exercise what it claims to: per-layer logits for distill, pruned masks for sparse.
  if stage == "fartrack_distill":
    assert sum(k.startswith("layer_logits_") for k in expected) == 4
  if stage == "fartrack_sparse":
    assert not inputs.token_mask.all() and not expected["keep_masks_train"].all()


def test_fixtures_are_small():
  total = sum(os.path.getsize(os.path.join(FIXTURES, f"parity_{s}.npz")) for s in STAGES)
  assert total <= 3 * 1024 * 1024


_REPO = os.environ.get("FARTRACK_TORCH_REPO")


@pytest.mark.skipif(not _REPO, reason="set FARTRACK_TORCH_REPO to a checkout of the original FARTrack code "
                    "(and install torch, timm --no-deps, easydict, pyyaml, einops) for the full-size comparison")
@pytest.mark.parametrize("variant", ["tiny", "nano", "pico"])
@pytest.mark.parametrize("stage", STAGES)
def test_full_size_parity_against_a_live_checkout(stage, variant):
  config = load_config(stage, f"variant={variant}")
  result = parity.run_parity(_REPO, config, seed=0)
  print(result.table())
  assert result.passed, result.table()


def test_compare_fails_above_tolerance_and_on_any_mask_difference():
  config = load_config("fartrack_sparse", "variant=smoke")
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((1, 4, model_lib.ModelSpec.from_config(config).vocab_size)).astype(np.float32)
  masks = rng.random((1, 4, 4)) > 0.5
  theirs = {"coord_logits": logits, "keep_masks_track": masks}
  assert parity.compare(theirs, dict(theirs), config).passed
  assert parity.compare(theirs, {"coord_logits": logits + 5e-5, "keep_masks_track": masks}, config).passed
  assert not parity.compare(theirs, {"coord_logits": logits + 2e-4, "keep_masks_track": masks}, config).passed
  flipped = masks.copy()
  flipped[0, 0, 0] ^= True
  assert not parity.compare(theirs, {"coord_logits": logits, "keep_masks_track": flipped}, config).passed
