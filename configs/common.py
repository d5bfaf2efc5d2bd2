"""What the three FARTrack stages share; each `configs/<stage>.py` starts from `base(stage, variant)` and writes
its own values over it.

The values are the original's resolved configs (its `lib/config/<stage>/config.py` defaults merged with
`experiments/<stage>/*_224_full.yaml`) in snake_case, plus what the original hard-codes in its actors and
trainers; `docs/configs.md` maps the original's YAML names to ours. A field here is read by the code: the
original's fields that configure nothing FARTrack builds (the PIX head, the mask decoder, candidate
elimination, ...) are left out.

Sections: `model` (the network), `data` (sampling and crops), `train` (optimisation and losses), `run` (ours:
how a run is laid out on devices, logged and checkpointed: nothing there changes what is learned; every
`run.*` field lives in `run()` below) and `test` (the tracker).
"""

import ml_collections

from fartrack_jax import config_lib

# ImageNet normalisation of the crops.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def base(stage: str, variant: str) -> ml_collections.ConfigDict:
  """The fields every stage has, at their shared values, for `variant` (one of `config_lib.VARIANTS`)."""
  config = ml_collections.ConfigDict()
  config.stage = stage
  config.variant = variant
  config.seed = 0
  config.dtype = "float32"  # Compute dtype; params and optimizer state stay float32.
  config.model = model(variant)
  config.data = data()
  config.train = train()
  config.run = run()
  config.test = test()
  return config


def model(variant: str) -> ml_collections.ConfigDict:
  """ViT-Tiny (MAE init) plus 3 extension blocks, the box as 4 tokens over `bins * range` coordinate bins."""
  m = ml_collections.ConfigDict()
  m.embed_dim = 192
  m.num_heads = 3
  m.mlp_ratio = 4.0
  m.qkv_bias = True
  m.patch_size = 16  # MODEL.BACKBONE.STRIDE (the sparse defaults also carry BACKBONE.PATCHSIZE = 16).
  m.num_blocks = 12
  m.extension = 3
  # Layers built and run (ViT blocks first, then extension blocks). The original trains and distills at the
  # full 12 + 3 = 15 layers; Nano and Pico are the first 10 and 6 layers of the distilled model.
  m.depth = config_lib.VARIANT_DEPTHS[variant]
  m.bins = 300
  m.range = 2
  # Previous boxes fed back as tokens; 0 = no prev_position_embeddings (stages 1 and 2 have no MODEL.PRENUM).
  m.prenum = 0
  m.norm_eps = 1e-6
  # The sparse ViT normalises with a LayerNorm that ignores pruned tokens (nn.LayerNorm's default eps).
  m.masked_norm = False
  m.masked_norm_eps = 1e-5
  # The sparse word embedding is nn.Embedding(max_norm=1); 0 = no max-norm renormalisation on lookup.
  m.word_max_norm = 0.0
  # 0-indexed layers after which coordinate logits are produced (the final layer's always are).
  m.logit_layers = ()
  # Sparse training prunes this fraction of each template's tokens (all but the last template); tracking
  # computes one keep mask per ratio. The ranking reads the centre search token's row (a 1x1 window).
  m.train_prune_ratio = 0.25
  m.track_prune_ratios = (0.25, 0.5, 0.75, 0.9)
  m.pretrain_file = "mae_tiny_distill_400e.pth.tar"
  # Previous stage's checkpoint for distill/sparse. The YAMLs hold a machine-specific absolute path
  # (/data5/FARTrack-re/...); set it on the command line instead.
  m.pretrain_pth = ""
  m.pretrain_grid = 14  # MAE positional-embedding grid side (224 / 16).
  # Ours: an empty pretrain_file/pretrain_pth is an error at the start of training unless this is set.
  m.allow_random_init = False
  return m


def data() -> ml_collections.ConfigDict:
  """Crops of every stage: 5 templates of 112 px (factor 2) and 224-px search crops (factor 4); each stage
  sets its search jitter, sampling gaps and datasets."""
  d = ml_collections.ConfigDict()
  d.mean = MEAN
  d.std = STD
  d.search = ml_collections.ConfigDict()
  d.search.size = 224
  d.search.factor = 4.0
  d.template = ml_collections.ConfigDict()
  d.template.number = 5
  d.template.size = 112
  d.template.factor = 2.0
  d.template.center_jitter = 0.0
  d.template.scale_jitter = 0.0
  d.train = ml_collections.ConfigDict()
  d.val = ml_collections.ConfigDict()
  d.val.datasets_ratio = (1,)
  d.val.sample_per_epoch = 10000
  return d


def train() -> ml_collections.ConfigDict:
  """AdamW with a step schedule and the losses' weights every stage shares."""
  t = ml_collections.ConfigDict()
  t.optimizer = "ADAMW"
  # Backbone params get lr * backbone_multiplier, except these (matched by name), which get the full lr.
  t.full_lr_param_patterns = ("output_bias", "embeddings", "extension")
  t.giou_weight = 2.0  # Applied to the SIoU loss (the original's 'giou' key).
  t.l1_weight = 0.0
  t.special_token_weight = 0.1  # CE class weight of the 5 command/padding tokens.
  t.siou_theta = 4
  # Inter-layer KL in distillation. The actor sets loss_weight['KL'] = 100 but never reads it: the loss
  # adds 0.01 * mean(KL) literally, so 0.01 is the weight that trains.
  t.kl_weight = 0.01
  t.seq_grad_clip_norm = 100.0  # The sparse trainer's hard-coded clip_grad_norm_(..., 100).
  t.grad_clip_norm = 0.1  # Stages 1 and 2 (LTRTrainer); the sparse trainer uses seq_grad_clip_norm.
  t.drop_path_rate = 0.1
  t.scheduler = ml_collections.ConfigDict()
  # The original's StepLR: lr x0.1 every `train.lr_drop_epoch` epochs (it builds StepLR without the YAML's
  # DECAY_RATE, so the decay is 0.1 whatever the YAML says). "cosine" (ours) = linear warm-up over
  # `warmup_steps`, then cosine decay to 0 at the last step (short runs such as the quick start learn faster).
  t.scheduler.type = "step"
  t.scheduler.warmup_steps = 0
  return t


def run() -> ml_collections.ConfigDict:
  """Ours, not in the original: how a training run is laid out on devices, logged and checkpointed; nothing
  here changes what is learned. Every `run.*` field is here; a stage sets `num_workers` and `val_every_steps`
  (the original's TRAIN.NUM_WORKER and VAL_EPOCH_INTERVAL)."""
  r = ml_collections.ConfigDict()
  # Devices along the parameter-sharding (FSDP) mesh axis; the rest form the data axis. 1 = pure data
  # parallel, params replicated.
  r.fsdp = 1
  r.max_steps = 0  # >0: stop after this many steps (the schedule still spans train.epoch epochs)
  r.log_every_steps = 50
  r.checkpoint_every_steps = 1000
  r.keep_checkpoints = 3  # most recent ones kept ...
  r.keep_period = 10000  # ... plus every checkpoint whose step is a multiple of this (0 = none)
  r.val_every_steps = 1000
  r.val_batches = 10
  r.profile_steps = 0  # >0: capture a profile of this many steps once, after the first checkpoint interval
  r.num_workers = 0  # grain worker processes per host (0 = in the training process)
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
  # the samples/s per host core, pixels resampled: docs on the input pipelines).
  r.data_path = "frames"
  return r


def frame_pairs(config: ml_collections.ConfigDict) -> None:
  """The data and schedule of the frame-level stages (1 and 2): one jittered search crop per sample from LaSOT,
  GOT-10k (vottrain), COCO17 and TrackingNet, 76,800 samples an epoch for 500 epochs, lr x0.1 after epoch 400,
  32 samples per process (the original trains on 4 GPUs: --nproc_per_node 4), cross-entropy weight 2 (the
  actor's hard-coded 'focal' weight) beside the SIoU loss."""
  d, t = config.data, config.train
  d.search.center_jitter = 3.5
  d.search.scale_jitter = 0.5
  d.search.number = 1
  d.train.datasets_name = ("LASOT", "GOT10K_vottrain", "COCO17", "TRACKINGNET")
  d.train.datasets_ratio = (1, 1, 1, 1)
  d.train.sample_per_epoch = 76800
  d.val.datasets_name = ("GOT10K_votval",)
  t.weight_decay = 1e-4
  t.epoch = 500
  t.lr_drop_epoch = 400
  # The global batch (ours) is that of one optimizer step over all devices and hosts; an epoch is
  # sample_per_epoch // global_batch_size steps.
  t.batch_size = 32
  t.global_batch_size = 4 * t.batch_size
  t.ce_weight = 2.0


def steps_per_epoch(config) -> int:
  """Optimizer steps in an epoch: data.train.sample_per_epoch over the global batch (at least 1)."""
  return max(1, config.data.train.sample_per_epoch // config.train.global_batch_size)


def test() -> ml_collections.ConfigDict:
  """The tracker's crops (the training sizes) and template sampling."""
  e = ml_collections.ConfigDict()
  e.template_factor = 2.0
  e.template_size = 112
  e.search_factor = 4.0
  e.search_size = 224
  # Every tracker refreshes its templates with "exponential" sampling: the first frame, frames at
  # (n - 1) * (1 - base**i) for i = 1..T-2, and the newest.
  e.template_sampling_base = 0.7
  return e


def smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks `config` in place to a seconds-long run on synthetic data (tests and the quick start): 2 layers
  of 48 channels, random init, 32/64-pixel crops, 2 templates, batches of 2, 8 samples an epoch."""
  m, d, t, r = config.model, config.data, config.train, config.run
  m.num_blocks, m.extension, m.depth = 1, 1, 2
  m.embed_dim, m.num_heads = 48, 3
  m.bins, m.range = 16, 2
  m.pretrain_grid = 4
  m.pretrain_file = ""  # Random init: no MAE weights.
  m.allow_random_init = True
  d.template.size, d.search.size = 32, 64
  d.template.number = 2
  for split in (d.train, d.val):
    split.datasets_name = ("SYNTHETIC",)
    split.datasets_ratio = (1,)
    split.sample_per_epoch = 8
  t.batch_size = 2
  t.global_batch_size = 2
  t.epoch = 2
  t.lr_drop_epoch = 1
  config.test.template_size, config.test.search_size = 32, 64
  r.log_every_steps = 1
  r.checkpoint_every_steps = 4
  r.keep_period = 0
  r.val_every_steps = 4
  r.val_batches = 1
  r.num_workers = 0


def finish(config: ml_collections.ConfigDict, options) -> ml_collections.ConfigDict:
  """`config` with the `dtype=`/`seed=` options of the config argument applied, validated."""
  return config_lib.validate_config(config_lib.apply_options(config, options))
