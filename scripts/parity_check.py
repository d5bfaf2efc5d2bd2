r"""Compares fartrack-jax with the original PyTorch FARTrack on the same weights and inputs.

  python scripts/parity_check.py --torch-repo /path/to/FARTrack \
      --config configs/fartrack_sparse.py:variant=tiny [--checkpoint FILE.pth.tar] [--seed 0]

Builds the original model from your checkout (random init from --seed unless --checkpoint is given), saves
its state dict and converts it with our converter, runs both on the same random inputs (templates, search,
and for the sparse stage a key mask) and prints max/mean |diff| of the coordinate logits (every layer for
distill), of the decoded boxes, and mask mismatches. Exits 1 when logits differ by more than 1e-4 (fp32)
or any keep mask differs.

The original runs on the CPU with run-time adjustments made in this process only (see README, "Parity with
the original"); your checkout is not modified. Needs torch, timm (--no-deps), easydict, pyyaml, einops.

--write-fixture PATH stores the original's weights (float16-valued), inputs and outputs as a CI fixture
instead of comparing (see tests/fartrack_jax/test_parity_fixtures.py for the commands that made ours).

Training parity (--train): trains the original (its model, actor, optimizer and scheduler builders, its
trainer's update and clipping) and this project's jitted train step side by side from the same init, on
the same batches, drop-path off, and compares them step by step (see docs/training_parity.md):

  python scripts/parity_check.py --train --torch-repo /path/to/FARTrack \
      --config configs/fartrack.py:variant=smoke --steps 100 --batch 2 [--every 10] \
      [--init FILE.pth.tar] [--data-root got10k=/data/got10k] [--json out.json] [--plot out.png]

It prints one line per step and a verdict; exits 1 when the step-1 losses differ by more than 1e-5
relative or the loss curves part by more than --curve-tolerance. With --write-fixture it writes a training
fixture for tests/fartrack_jax/training/test_training_parity.py instead (--steps steps of --batch).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage/variant config, e.g. "
                                          "configs/fartrack_distill.py:variant=nano; fields may be overridden.")
_TORCH_REPO = flags.DEFINE_string("torch_repo", None, "Path of a checkout of the original FARTrack code "
                                  "(also --torch-repo).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Optional original checkpoint (.pth.tar) to compare "
                                  "on instead of a random init.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random init and of the random inputs.")
_BATCH = flags.DEFINE_integer("batch", 2, "Number of random input samples.")
_ALLOW_PICKLE = flags.DEFINE_bool("allow_pickle", False, "Read --checkpoint with full unpickling (trusted "
                                  "files only).")
_WRITE_FIXTURE = flags.DEFINE_string("write_fixture", None, "Write a CI fixture (.npz) here instead of "
                                     "comparing (also --write-fixture).")
_TRAIN = flags.DEFINE_bool("train", False, "Compare training step by step instead of one forward pass.")
_STEPS = flags.DEFINE_integer("steps", 10, "--train: optimizer steps.")
_EVERY = flags.DEFINE_integer("every", 1, "--train: compare all params every K steps (and at the last).")
_INIT = flags.DEFINE_string("init", None, "--train: start both from this original checkpoint (.pth.tar of "
                            "the stage) instead of the original's random init from --seed.")
_DATA_ROOT = flags.DEFINE_multi_string("data_root", [], "--train: NAME=DIR dataset root as train.py's "
                                       "--config.run.data_roots.NAME takes it (repeatable; also "
                                       "--data-root); batches are drawn once by this project's pipeline. "
                                       "None: synthetic batches.")
_JSON = flags.DEFINE_string("json", None, "--train: write the per-step records here (JSON).")
_PLOT = flags.DEFINE_string("plot", None, "--train: write loss/IoU curves and the param difference (PNG).")
_CURVE_TOLERANCE = flags.DEFINE_float("curve_tolerance", 1e-2, "--train: relative loss difference at "
                                      "which the curves count as parted (also 1e-3 absolute).")
_WRITE_PARAM_SHAPES = flags.DEFINE_string("write_param_shapes", None, "Add the original's state-dict key "
                                          "names and shapes for --config to this JSON file (keyed by stage) "
                                          "instead of comparing.")


def main(argv):
  del argv
  if not _TORCH_REPO.value or _CONFIG.value is None:
    raise SystemExit("--torch-repo and --config are required (see --help)")
  config = config_lib.validate_config(_CONFIG.value)
  from fartrack_jax import parity  # pylint: disable=g-import-not-at-top
  if _WRITE_PARAM_SHAPES.value:
    path = _WRITE_PARAM_SHAPES.value
    table = json.load(open(path)) if os.path.exists(path) else {}
    table[config.stage] = parity.original_param_shapes(_TORCH_REPO.value, config, _SEED.value)
    with open(path + ".tmp", "w") as f:
      json.dump(table, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
    print(f"wrote {len(table[config.stage])} {config.stage} keys to {path}")
    return
  if _TRAIN.value:
    raise SystemExit(_train(config))
  if _WRITE_FIXTURE.value:
    parity.write_fixture(_WRITE_FIXTURE.value, _TORCH_REPO.value, config,
                         json.loads(config.to_json_best_effort()), _SEED.value, _BATCH.value)
    print(f"wrote {_WRITE_FIXTURE.value} ({os.path.getsize(_WRITE_FIXTURE.value) / 1e6:.2f} MB)")
    return
  print(f"stage={config.stage} variant={config.get('variant')} depth={config.model.depth} seed={_SEED.value}")
  result = parity.run_parity(_TORCH_REPO.value, config, _CHECKPOINT.value, _SEED.value, _ALLOW_PICKLE.value,
                             _BATCH.value)
  print(result.table())
  raise SystemExit(0 if result.passed else 1)


def _train(config) -> int:
  from fartrack_jax import train_parity  # pylint: disable=g-import-not-at-top
  if _STEPS.value < 1 or _EVERY.value < 1 or _BATCH.value < 1:
    raise SystemExit("--steps, --every and --batch must be >= 1")
  if _WRITE_FIXTURE.value:
    train_parity.write_fixture(_WRITE_FIXTURE.value, _TORCH_REPO.value, config,
                               json.loads(config.to_json_best_effort()), _STEPS.value, _BATCH.value,
                               _SEED.value)
    print(f"wrote {_WRITE_FIXTURE.value} ({os.path.getsize(_WRITE_FIXTURE.value) / 1e6:.2f} MB)")
    return 0
  roots = {}
  for item in _DATA_ROOT.value:
    name, sep, root = item.partition("=")
    if not sep or not name or not root:
      raise SystemExit(f"--data-root {item!r}: expected NAME=DIR, e.g. got10k=/data/got10k")
    roots[name] = root
  print(f"stage={config.stage} variant={config.get('variant')} depth={config.model.depth} dtype={config.dtype} "
        f"steps={_STEPS.value} batch={_BATCH.value} seed={_SEED.value} init={_INIT.value or 'random'}")

  def show(rec):
    line = (f"step {rec['step']:5d}  loss {rec['loss_ours']:.6f} / {rec['loss_original']:.6f}  "
            f"iou {rec.get('iou_ours', float('nan')):.4f} / {rec.get('iou_original', float('nan')):.4f}  "
            f"grad_norm {rec['grad_norm_ours']:.4g} / {rec['grad_norm_original']:.4g}")
    if rec["param_max_abs_diff"] is not None:
      line += f"  param max|diff| {rec['param_max_abs_diff']:.3e} ({rec['param_max_abs_diff_key']})"
    if "explore_box_max_abs_diff" in rec:
      line += f"  boxes max|diff| {rec['explore_box_max_abs_diff']:.3g}"
    print(line, flush=True)

  print("columns: ours / original")
  result = train_parity.run_train_parity(_TORCH_REPO.value, config, _STEPS.value, _BATCH.value, _EVERY.value,
                                         _SEED.value, _INIT.value, roots or None, _ALLOW_PICKLE.value,
                                         _CURVE_TOLERANCE.value, on_step=show)
  if _JSON.value:
    tmp = _JSON.value + ".tmp"
    with open(tmp, "w") as f:
      json.dump(result.to_json(), f, indent=1)
    os.replace(tmp, _JSON.value)
  if _PLOT.value:
    train_parity.plot(result, _PLOT.value)
  print(result.verdict)
  return 0 if result.passed else 1


if __name__ == "__main__":
  cli.run(main)
