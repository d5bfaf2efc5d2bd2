"""Hyper-parameters of the three FARTrack training stages, and their validation.

`base_config(stage, variant)` holds every hyper-parameter of the original's resolved config for a stage (its
`lib/config/<stage>/config.py` defaults merged with `experiments/<stage>/*_224_full.yaml`), in snake_case,
plus the values the original hard-codes in its actors and trainers. `configs/<stage>.py` wrap it with
big_vision's `get_config(arg)`; `validate_config` is called at load time and again by the entry points after
command-line overrides, so a bad value fails with the dotted name of the field before anything is built.
"""

from __future__ import annotations

import numbers
from typing import Any

import ml_collections

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")

# Layers built and run (ViT blocks first, then extension blocks). The original trains and distills at the
# full 12 + 3 = 15 layers; Nano and Pico are the first 10 and 6 layers of the distilled model.
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


def base_config(stage: str, variant: str = DEFAULT_VARIANT) -> ml_collections.ConfigDict:
  """The resolved hyper-parameters of `stage` (one of STAGES) at `variant` (one of VARIANTS)."""
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
  if variant not in VARIANT_DEPTHS:
    raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
  sparse = stage == "fartrack_sparse"
  distill = stage == "fartrack_distill"

  config = ml_collections.ConfigDict()
  config.stage = stage
  config.variant = variant
  config.seed = 0
  config.dtype = "float32"  # Compute dtype; params and optimizer state stay float32.

  # ---------------------------------------------------------------- model
  config.model = m = ml_collections.ConfigDict()
  m.backbone_type = "vit_tiny_patch16_224"
  m.embed_dim = 192
  m.num_heads = 3
  m.mlp_ratio = 4.0
  m.qkv_bias = True
  m.patch_size = 16  # MODEL.BACKBONE.STRIDE (the sparse defaults also carry BACKBONE.PATCHSIZE = 16).
  m.num_blocks = 12
  m.extension = 3
  m.depth = VARIANT_DEPTHS[variant]
  m.bins = 300
  m.range = 2
  # Previous boxes fed back as tokens; 0 = no prev_position_embeddings (stages 1 and 2 have no MODEL.PRENUM).
  m.prenum = 3 if sparse else 0
  m.norm_eps = 1e-6
  # The sparse ViT normalises with a LayerNorm that ignores pruned tokens (nn.LayerNorm's default eps).
  m.masked_norm = sparse
  m.masked_norm_eps = 1e-5
  # The sparse word embedding is nn.Embedding(max_norm=1); 0 = no max-norm renormalisation on lookup.
  m.word_max_norm = 1.0 if sparse else 0.0
  # 0-indexed layers after which coordinate logits are produced (the final layer's always are). The
  # original distill backbone emits after blocks 4..11 and extension blocks 0..1, plus the final layer.
  m.logit_layers = tuple(range(4, m.depth)) if distill else ()
  # Sparse training prunes this fraction of each template's tokens (all but the last template); tracking
  # computes one keep mask per ratio. The ranking reads the centre search token's row (a 1x1 window).
  m.train_prune_ratio = 0.25
  m.track_prune_ratios = (0.25, 0.5, 0.75, 0.9)
  m.prune_center_size = 1
  m.pretrain_file = "mae_tiny_distill_400e.pth.tar"
  # Previous stage's checkpoint for distill/sparse. The YAMLs hold a machine-specific absolute path
  # (/data5/FARTrack-re/...); set it on the command line instead.
  m.pretrain_pth = ""
  m.pretrain_grid = 14  # MAE positional-embedding grid side (224 / 16).
  # Ours: an empty pretrain_file/pretrain_pth is an error at the start of training unless this is set.
  m.allow_random_init = False
  m.cat_mode = "direct"
  m.sep_seg = False
  m.add_cls_token = False
  m.cls_token_use_mode = "ignore"
  m.return_inter = False
  m.return_stages = (2, 5, 8, 11)
  m.extra_merger = False
  m.mid_pe = False
  m.merge_layer = 0
  # OSTrack's candidate elimination: empty in every FARTrack config, so never active.
  m.ce_loc = ()
  m.ce_keep_ratio = ()
  m.ce_template_range = "ALL"
  # The original's MODEL.{HEAD,ENCODER_LAYER,DECODER_LAYER,NUM_HEADS,MLP_RATIO,QKV_BIAS,DROP_RATE,
  # ATTN_DROP,DROP_PATH} configure a PIX head no FARTrack model builds (the coordinate logits come from
  # the shared word embedding). Kept for completeness; MODEL.NUM_HEADS=12 there is not the ViT's 3 heads.
  m.head = ml_collections.ConfigDict()
  m.head.type = "PIX"
  m.head.num_channels = 1024
  m.head.encoder_layer = 3
  m.head.decoder_layer = 6
  m.head.num_heads = 12
  m.head.mlp_ratio = 4.0
  m.head.qkv_bias = True
  m.head.drop_rate = 0.1
  m.head.attn_drop = 0.0
  m.head.drop_path = 0.0
  if sparse:
    # MODEL.DECODER (an MAE-style mask decoder) exists only in the sparse defaults and is never built.
    m.decoder = ml_collections.ConfigDict()
    m.decoder.type = "mask"
    m.decoder.mask_ratio = 0.75
    m.decoder.embed_dim = 512
    m.decoder.depth = 8
    m.decoder.num_heads = 16
    m.decoder.mlp_ratio = 4.0

  # ---------------------------------------------------------------- data
  config.data = d = ml_collections.ConfigDict()
  d.mean = (0.485, 0.456, 0.406)
  d.std = (0.229, 0.224, 0.225)
  d.sampler_mode = "causal"
  # Stage-1 YAML raises MAX_SAMPLE_INTERVAL from the default 200 to 300; distill/sparse keep 200.
  d.max_sample_interval = 300 if stage == "fartrack" else 200
  if sparse:
    # The sequence sampler reads these; MAX_SAMPLE_INTERVAL is unused by the sparse stage.
    d.max_gap = 300
    d.max_interval = 5
    d.interval_prob = 0.0
    d.temp = 2
    # Ours: side of the square canvas each clip frame is placed on (top-left; downscaled to fit, never
    # upscaled). The original crops full frames on the host; we crop the search regions on device, so a
    # clip's frames need one static shape. 640 keeps the search crops (4x the target's size, to 224 px) at
    # about 1x resolution or more for typical targets.
    d.clip_canvas = 640
  else:
    # No MAX_GAP in these stages' configs: their frame sampler gets max_gap=MAX_SAMPLE_INTERVAL.
    d.max_gap = d.max_sample_interval
  d.search = ml_collections.ConfigDict()
  d.search.size = 224
  d.search.factor = 4.0
  d.search.center_jitter = 3.0 if sparse else 3.5
  d.search.scale_jitter = 0.25 if sparse else 0.5
  d.search.number = 32 if sparse else 1  # Sparse: frames per training sequence.
  d.template = ml_collections.ConfigDict()
  d.template.number = 5
  d.template.size = 112
  d.template.factor = 2.0
  d.template.center_jitter = 0.0
  d.template.scale_jitter = 0.0
  d.train = ml_collections.ConfigDict()
  if sparse:
    d.train.datasets_name = ("LASOT", "GOT10K_vottrain", "TRACKINGNET")
    d.train.datasets_ratio = (1, 1, 1)
    d.train.sample_per_epoch = 1000
  else:
    d.train.datasets_name = ("LASOT", "GOT10K_vottrain", "COCO17", "TRACKINGNET")
    d.train.datasets_ratio = (1, 1, 1, 1)
    d.train.sample_per_epoch = 76800
  d.val = ml_collections.ConfigDict()
  d.val.datasets_name = ("GOT10K_official_val",) if sparse else ("GOT10K_votval",)
  d.val.datasets_ratio = (1,)
  d.val.sample_per_epoch = 10000

  # ---------------------------------------------------------------- train
  config.train = t = ml_collections.ConfigDict()
  t.lr = {"fartrack": 4e-4, "fartrack_distill": 4e-5, "fartrack_sparse": 4e-6}[stage]
  t.weight_decay = 0.05 if sparse else 1e-4
  t.epoch = 20 if sparse else 500
  t.lr_drop_epoch = 999 if sparse else 400  # Sparse: never drops within its 20 epochs.
  # Per process: the original trains on 4 GPUs (--nproc_per_node 4), i.e. global batches 128/128/32.
  # The sparse trainer backpropagates each sequence of the batch separately before one optimizer step,
  # so its sequence loss is summed, not averaged, over the batch.
  t.batch_size = 8 if sparse else 32
  t.num_worker = 10 if distill else 12
  t.optimizer = "ADAMW"
  # Backbone params get lr * backbone_multiplier, except these (matched by name), which get the full lr.
  t.backbone_multiplier = 1.0 if distill else 0.1
  t.full_lr_param_patterns = ("output_bias", "embeddings", "extension")
  t.giou_weight = 2.0  # Applied to the SIoU loss (the original's 'giou' key).
  t.l1_weight = 0.0
  # TRAIN.SCORE_WEIGHT: the sparse defaults say 1.0, the others 0.0; no actor applies a score loss.
  t.score_weight = 1.0 if sparse else 0.0
  # The actors' hard-coded cross-entropy ('focal') weight: 2 in stages 1 and 2; the sparse actor
  # overwrites it with 0 every step, so its sequence loss is SIoU only.
  t.ce_weight = 0.0 if sparse else 2.0
  t.special_token_weight = 0.1  # CE class weight of the 5 command/padding tokens.
  t.siou_theta = 4
  # Inter-layer KL in distillation. The actor sets loss_weight['KL'] = 100 but never reads it: the loss
  # adds 0.01 * mean(KL) literally, so 0.01 is the weight that trains.
  t.kl_weight = 0.01
  t.seq_grad_clip_norm = 100.0  # The sparse trainer's hard-coded clip_grad_norm_(..., 100).
  t.freeze_layers = (0,)
  t.print_interval = {"fartrack": 600, "fartrack_distill": 50, "fartrack_sparse": 1}[stage]
  t.val_epoch_interval = {"fartrack": 50, "fartrack_distill": 20, "fartrack_sparse": 10}[stage]
  t.grad_clip_norm = 0.1  # Stages 1 and 2 (LTRTrainer); the sparse trainer uses seq_grad_clip_norm.
  t.amp = False
  t.drop_path_rate = 0.1
  t.ce_start_epoch = 20
  t.ce_warm_epoch = 80
  t.scheduler = ml_collections.ConfigDict()
  t.scheduler.type = "step"
  # The original builds StepLR(optimizer, LR_DROP_EPOCH) without passing this, so its decay is 0.1
  # whatever the YAML says; for sparse (0.05) the drop never happens anyway.
  t.scheduler.decay_rate = 0.05 if sparse else 0.1
  # Ours, not in the original: "cosine" = linear warm-up over `warmup_steps`, then cosine decay to 0 at the
  # last step (short runs such as the quick start learn faster with it); "step" is the original's StepLR.
  t.scheduler.warmup_steps = 0
  # Not in the original (its batch is per GPU, over 4 GPUs): the batch of one optimizer step over all
  # devices and hosts here. An epoch is data.train.sample_per_epoch // global_batch_size steps.
  t.global_batch_size = 4 * t.batch_size

  # ---------------------------------------------------------------- run (ours: how a training run is
  # laid out on devices, logged and checkpointed; nothing here changes what is learned)
  config.run = r = ml_collections.ConfigDict()
  # Devices along the parameter-sharding (FSDP) mesh axis; the rest form the data axis. 1 = pure data
  # parallel, params replicated.
  r.fsdp = 1
  r.max_steps = 0  # >0: stop after this many steps (the schedule still spans train.epoch epochs)
  r.log_every_steps = 50
  r.checkpoint_every_steps = 1000
  r.keep_checkpoints = 3  # most recent ones kept ...
  r.keep_period = 10000  # ... plus every checkpoint whose step is a multiple of this (0 = none)
  r.val_every_steps = int(t.val_epoch_interval) * max(1, d.train.sample_per_epoch // t.global_batch_size)
  r.val_batches = 10
  r.profile_steps = 0  # >0: capture a profile of this many steps once, after the first checkpoint interval
  r.num_workers = int(t.num_worker)  # grain worker processes per host (0 = in the training process)
  # grain read threads per process (0 = the pipeline's default, 4 for frames, 2 for clips). Threads pay off
  # when reading waits (large JPEGs, a bucket); on small frames the work is Python under one lock, and on
  # 2 cores one thread beside the training step is fastest.
  r.read_threads = 0
  # Dataset roots by training name or family (`got10k`, `lasot`, `coco`, `trackingnet`, `synthetic`);
  # set on the command line: --config.run.data_roots.got10k=/data/got10k ... Empty = not configured.
  r.data_roots = ml_collections.ConfigDict({"got10k": "", "lasot": "", "coco": "", "trackingnet": "",
                                            "synthetic": ""})
  r.index_cache_dir = ""  # default: <workdir>/index_cache
  # Read the training datasets from tensorflow-datasets array_record files built by scripts/build_tfds.py
  # under this folder (e.g. gs://bucket/tfds) instead of the native roots above.
  r.tfds_data_dir = ""
  # Stages 1/2 only: "frames" reads whole frames (the original's crops to the bit); "precropped" reads the
  # pre-cropped windows `scripts/build_tfds.py --format crops` writes under run.tfds_data_dir (several times
  # the samples/s per host core, pixels resampled: README "Feeding an accelerator").
  r.data_path = "frames"

  # ---------------------------------------------------------------- test
  config.test = e = ml_collections.ConfigDict()
  e.template_factor = 2.0
  e.template_size = 112
  e.search_factor = 4.0
  e.search_size = 224
  e.epoch = 15 if sparse else 500  # Checkpoint epoch evaluated.
  # Every tracker refreshes its templates with "exponential" sampling: the first frame, frames at
  # (n - 1) * (1 - base**i) for i = 1..T-2, and the newest.
  e.template_sampling = "exponential"
  e.template_sampling_base = 0.7

  if variant == "smoke":
    _apply_smoke(config)
  return config


def _apply_smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks `config` in place to a seconds-long run on synthetic data (tests and the quick start)."""
  m, d, t = config.model, config.data, config.train
  m.num_blocks, m.extension, m.depth = 1, 1, 2
  m.embed_dim, m.num_heads = 48, 3
  m.bins, m.range = 16, 2
  m.pretrain_grid = 4
  m.pretrain_file = ""  # Random init: no MAE weights.
  m.allow_random_init = True
  if config.stage == "fartrack_distill":
    m.logit_layers = (0,)
  d.template.size, d.search.size = 32, 64
  d.template.number = 2
  if config.stage == "fartrack_sparse":
    d.search.number = 4
    d.clip_canvas = 96
  for split in (d.train, d.val):
    split.datasets_name = ("SYNTHETIC",)
    split.datasets_ratio = (1,)
    split.sample_per_epoch = 8
  t.batch_size = 2
  t.global_batch_size = 2
  t.num_worker = 0
  t.epoch = 2
  t.lr_drop_epoch = 1
  t.print_interval = 1
  t.val_epoch_interval = 1
  config.test.template_size, config.test.search_size = 32, 64
  config.test.epoch = 2
  r = config.run
  r.log_every_steps = 1
  r.checkpoint_every_steps = 4
  r.keep_period = 0
  r.val_every_steps = 4
  r.val_batches = 1
  r.num_workers = 0


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
  _int(config, "train.num_worker", 0)
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
