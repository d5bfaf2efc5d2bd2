"""Parsing and validation of the FARTrack configs; the values live in `configs/` (`configs/<stage>.py`,
shared ones in `configs/common.py`).

`parse_arg` reads big_vision's `get_config(arg)` argument (`variant=nano,seed=1`), `apply_options` applies its
`dtype`/`seed`; `validate_config` is called at load time and again by the entry points after command-line
overrides, so a bad value fails with the dotted name of the field before anything is built.
"""

from __future__ import annotations

import numbers
from typing import Any

import ml_collections

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")

# The published variants by the layers they build and run (ViT blocks first, then extension blocks): Tiny is
# the full 12 + 3 = 15 layers, Nano and Pico the first 10 and 6 of the distilled model; smoke is our 2-layer
# test model. `parse_arg` knows a variant by these names, and an export names a depth by them.
VARIANT_DEPTHS = {"tiny": 15, "nano": 10, "pico": 6, "smoke": 2}
VARIANTS = tuple(VARIANT_DEPTHS)
DEFAULT_VARIANT = "tiny"

DTYPES = ("float32", "bfloat16")

# Learning-rate schedules: the original's StepLR, or linear warm-up then cosine decay (ours).
SCHEDULERS = ("step", "cosine")

# The original's `names2datasets` list, minus SAV and VastTrack (no released config uses them), plus our
# SYNTHETIC: a small generated dataset for the smoke variant and the quick start.
DATASET_NAMES = ("LASOT", "GOT10K_vottrain", "GOT10K_votval", "GOT10K_train_full", "GOT10K_official_val",
                 "COCO17", "VID", "TRACKINGNET", "SYNTHETIC")

# Options `get_config(arg)` understands besides `variant`, with the type their string is cast to.
_OPTION_TYPES = {"variant": str, "dtype": str, "seed": int}


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses a big_vision-style config argument: `None`, `"nano"`, `"variant=nano"`, `"variant=pico,x=y"`.

  A bare word that names a variant selects it; any other bare word is a flag set to True. Values of keys
  in `spec` (defaults) or in the known options are cast to their type; other values stay strings.

  Returns:
    A ConfigDict with at least `variant` (default "tiny").

  Raises:
    ValueError: for an unknown variant (the message names it and the allowed ones) or a malformed item.
  """
  options = ml_collections.ConfigDict({"variant": DEFAULT_VARIANT, **spec})
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    if "=" in item:
      key, value = (s.strip() for s in item.split("=", 1))
      if not key:
        raise ValueError(f"config argument item {item!r} has no key (expected key=value)")
      options[key] = _cast(key, value, spec)
    elif item in VARIANT_DEPTHS:
      options.variant = item
    else:
      options[item] = True
  if options.variant not in VARIANT_DEPTHS:
    raise ValueError(f"unknown variant {options.variant!r}; allowed: {', '.join(VARIANTS)}")
  return options


def _cast(key: str, value: str, spec: dict[str, Any]) -> Any:
  kind = type(spec[key]) if key in spec else _OPTION_TYPES.get(key, str)
  if kind is bool:
    if value.lower() in ("1", "true", "yes"):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"config argument {key}={value!r} is not a boolean")
  try:
    return kind(value)
  except ValueError as e:
    raise ValueError(f"config argument {key}={value!r} is not a {kind.__name__}") from e


def apply_options(config: ml_collections.ConfigDict, options) -> ml_collections.ConfigDict:
  """Applies the non-variant options of `parse_arg` (`dtype`, `seed`); unknown keys are an error."""
  for key, value in dict(options).items():
    if key == "variant":
      continue
    if key not in ("dtype", "seed"):
      raise ValueError(f"unknown config argument {key!r}; allowed: {', '.join(_OPTION_TYPES)}")
    config[key] = value
  return config


def _fail(path: str, value: Any, why: str):
  raise ValueError(f"{path}={value!r} {why}")


def _int(config, path: str, low: int | None = None) -> int:
  value = _get(config, path)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(path, value, "is not an integer")
  if low is not None and value < low:
    _fail(path, value, f"must be >= {low}")
  return int(value)


def _get(config, path: str) -> Any:
  node = config
  for key in path.split("."):
    try:
      node = node[key]
    except KeyError:
      raise ValueError(f"{path} is missing from the config") from None
  return node


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the values the model, data and train code rely on; returns `config` unchanged.

  Raises:
    ValueError: naming the first offending field by its dotted path, e.g.
      "model.depth=16 is out of range 1..15 (model.num_blocks + model.extension)".
  """
  stage = _get(config, "stage")
  if stage not in STAGES:
    _fail("stage", stage, f"is not one of {STAGES}")
  variant = _get(config, "variant")
  if variant not in VARIANT_DEPTHS:
    _fail("variant", variant, f"is not one of {VARIANTS}")
  dtype = _get(config, "dtype")
  if dtype not in DTYPES:
    _fail("dtype", dtype, f"is not one of {DTYPES}")
  _int(config, "seed")

  # Model.
  num_blocks = _int(config, "model.num_blocks", 0)
  extension = _int(config, "model.extension", 0)
  depth = _int(config, "model.depth")
  if not 1 <= depth <= num_blocks + extension:
    _fail("model.depth", depth,
          f"is out of range 1..{num_blocks + extension} (model.num_blocks + model.extension)")
  embed_dim = _int(config, "model.embed_dim", 1)
  num_heads = _int(config, "model.num_heads", 1)
  if embed_dim % num_heads:
    _fail("model.embed_dim", embed_dim, f"is not divisible by model.num_heads={num_heads}")
  if _get(config, "model.mlp_ratio") <= 0:
    _fail("model.mlp_ratio", config.model.mlp_ratio, "must be > 0")
  patch = _int(config, "model.patch_size", 1)
  _int(config, "model.bins", 2)
  if _get(config, "model.range") <= 0:
    _fail("model.range", config.model.range, "must be > 0")
  _int(config, "model.prenum", 0)
  _int(config, "model.pretrain_grid", 1)
  for path in ("model.norm_eps", "model.masked_norm_eps"):
    if _get(config, path) <= 0:
      _fail(path, _get(config, path), "must be > 0")
  if _get(config, "model.word_max_norm") < 0:
    _fail("model.word_max_norm", config.model.word_max_norm, "must be >= 0 (0 = no max-norm)")
  for layer in _get(config, "model.logit_layers"):
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= layer < depth:
      _fail("model.logit_layers", tuple(config.model.logit_layers),
            f"has entry {layer!r} outside [0, model.depth={depth}); when changing model.depth set "
            "model.logit_layers too")
  ratios = [("model.train_prune_ratio", _get(config, "model.train_prune_ratio"))]
  track_ratios = tuple(_get(config, "model.track_prune_ratios"))
  if not track_ratios:
    _fail("model.track_prune_ratios", track_ratios, "must not be empty")
  ratios += [("model.track_prune_ratios", r) for r in track_ratios]
  for path, ratio in ratios:
    if not 0 < ratio < 1:
      _fail(path, ratio if path == "model.train_prune_ratio" else track_ratios,
            f"has a ratio {ratio!r} outside (0, 1)")

  # Data: image sizes are whole patch grids, and tracking uses the training sizes, because the positional
  # embeddings are built for exactly one template grid and one search grid.
  for path in ("data.template.size", "data.search.size", "test.template_size", "test.search_size"):
    size = _int(config, path, 1)
    if size % patch:
      _fail(path, size, f"is not a multiple of model.patch_size={patch}")
  for test_path, data_path in (("test.template_size", "data.template.size"),
                               ("test.search_size", "data.search.size")):
    if _get(config, test_path) != _get(config, data_path):
      _fail(test_path, _get(config, test_path),
            f"differs from {data_path}={_get(config, data_path)}: the positional embeddings are built "
            "for one grid, so tracking must use the training crop sizes")
  min_templates = 2 if stage == "fartrack_sparse" else 1
  why = " (sparse prunes every template but the last)" if min_templates == 2 else ""
  if _int(config, "data.template.number") < min_templates:
    _fail("data.template.number", config.data.template.number, f"must be >= {min_templates}{why}")
  _int(config, "data.search.number", 1)
  if stage == "fartrack_sparse":
    _int(config, "data.clip_canvas", 16)
  for path in ("data.mean", "data.std"):
    if len(_get(config, path)) != 3:
      _fail(path, tuple(_get(config, path)), "must have 3 (RGB) entries")
  if any(s <= 0 for s in config.data.std):
    _fail("data.std", tuple(config.data.std), "must be > 0")
  for split in ("train", "val"):
    names = tuple(_get(config, f"data.{split}.datasets_name"))
    ratio_values = tuple(_get(config, f"data.{split}.datasets_ratio"))
    if not names:
      _fail(f"data.{split}.datasets_name", names, "must name at least one dataset")
    for name in names:
      if name not in DATASET_NAMES:
        _fail(f"data.{split}.datasets_name", names, f"has unknown dataset {name!r}; known: {DATASET_NAMES}")
    if len(ratio_values) != len(names):
      _fail(f"data.{split}.datasets_ratio", ratio_values,
            f"has {len(ratio_values)} entries but data.{split}.datasets_name has {len(names)}")
    if any(r < 0 for r in ratio_values) or not sum(ratio_values) > 0:
      _fail(f"data.{split}.datasets_ratio", ratio_values, "must be >= 0 with a positive sum")
    _int(config, f"data.{split}.sample_per_epoch", 1)

  # Train.
  _int(config, "train.batch_size", 1)
  _int(config, "train.epoch", 1)
  for path in ("train.lr", "train.weight_decay", "train.drop_path_rate"):
    if _get(config, path) < 0:
      _fail(path, _get(config, path), "must be >= 0")
  if not _get(config, "train.drop_path_rate") < 1:
    _fail("train.drop_path_rate", config.train.drop_path_rate, "must be < 1")
  global_batch = _int(config, "train.global_batch_size", 1)
  if global_batch > _get(config, "data.train.sample_per_epoch"):
    _fail("train.global_batch_size", global_batch,
          f"exceeds data.train.sample_per_epoch={config.data.train.sample_per_epoch}: an epoch would have no step")
  _int(config, "train.lr_drop_epoch", 1)
  if _get(config, "train.scheduler.type") not in SCHEDULERS:
    _fail("train.scheduler.type", config.train.scheduler.type, f"is not one of {SCHEDULERS}")
  if "warmup_steps" in config.train.scheduler:
    _int(config, "train.scheduler.warmup_steps", 0)

  # Run (absent from configs written before the run section existed: nothing to check then).
  if "run" in config:
    _int(config, "run.fsdp", 1)
    for path in ("run.log_every_steps", "run.checkpoint_every_steps", "run.keep_checkpoints",
                 "run.val_every_steps", "run.val_batches"):
      _int(config, path, 1)
    for path in ("run.keep_period", "run.profile_steps", "run.num_workers", "run.max_steps"):
      _int(config, path, 0)
    if "read_threads" in config.run:  # absent from configs written before it existed
      _int(config, "run.read_threads", 0)
    data_path = config.run.get("data_path", "frames")
    if data_path not in ("frames", "precropped"):
      _fail("run.data_path", data_path, "is not one of ('frames', 'precropped')")
    if data_path == "precropped" and (stage == "fartrack_sparse" or not config.run.get("tfds_data_dir")):
      _fail("run.data_path", data_path, "needs a frame stage (fartrack, fartrack_distill) and run.tfds_data_dir "
            "(where scripts/build_tfds.py --format crops wrote the sets)")
  return config
