"""Configs: every stage x variant loads and validates, values equal the original YAMLs, bad values fail."""

import importlib
import os

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from fartrack_jax import config_lib
from tests.conftest import ROOT

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")
VARIANTS = ("tiny", "nano", "pico", "smoke")
CONFIGS = os.path.join(ROOT, "configs")


def get_config(stage, arg=None):
  return importlib.import_module(f"configs.{stage}").get_config(arg)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_and_variant_loads_and_validates(stage, variant):
  config = get_config(stage, f"variant={variant}")
  assert isinstance(config, ml_collections.ConfigDict)
  assert config.stage == stage and config.variant == variant
  assert config_lib.validate_config(config) is config
  # The fields the model code reads.
  for path in ("model.embed_dim", "model.num_heads", "model.mlp_ratio", "model.qkv_bias", "model.patch_size",
               "model.num_blocks", "model.extension", "model.depth", "model.bins", "model.range",
               "model.prenum", "model.norm_eps", "model.masked_norm", "model.masked_norm_eps",
               "model.word_max_norm", "model.logit_layers", "model.train_prune_ratio",
               "model.track_prune_ratios", "model.pretrain_grid", "data.template.number",
               "data.template.size", "data.search.size", "train.drop_path_rate", "dtype", "seed"):
    node = config
    for key in path.split("."):
      node = node[key]


def test_stages_constant_matches():
  assert config_lib.STAGES == STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_variant_depths_are_15_10_6(stage):
  assert get_config(stage).model.depth == 15  # Default variant is Tiny.
  assert get_config(stage, "variant=tiny").model.depth == 15
  assert get_config(stage, "variant=nano").model.depth == 10
  assert get_config(stage, "variant=pico").model.depth == 6
  assert config_lib.VARIANT_DEPTHS["tiny"] == 15
  assert config_lib.VARIANT_DEPTHS["nano"] == 10
  assert config_lib.VARIANT_DEPTHS["pico"] == 6


def test_distill_logit_layers_follow_the_depth():
  assert get_config("fartrack_distill", "tiny").model.logit_layers == tuple(range(4, 15))
  assert get_config("fartrack_distill", "nano").model.logit_layers == (4, 5, 6, 7, 8, 9)
  assert get_config("fartrack_distill", "pico").model.logit_layers == (4, 5)
  assert get_config("fartrack_distill", "smoke").model.logit_layers == (0,)
  for stage in ("fartrack", "fartrack_sparse"):
    assert get_config(stage).model.logit_layers == ()


# Expected values copied from experiments/<stage>/*_224_full.yaml (and, where the YAML is silent, the
# stage's lib/config/<stage>/config.py defaults) of the original repository (docs/configs.md maps the names):
# run.num_workers is TRAIN.NUM_WORKER, run.val_every_steps VAL_EPOCH_INTERVAL epochs of
# sample_per_epoch // (4 GPUs x batch) steps, data.max_gap of stages 1 and 2 MAX_SAMPLE_INTERVAL.
@pytest.mark.parametrize("stage,expected", [
    ("fartrack", {
        "train.lr": 4e-4, "train.weight_decay": 1e-4, "train.batch_size": 32, "train.epoch": 500,
        "train.lr_drop_epoch": 400, "train.backbone_multiplier": 0.1, "run.num_workers": 12,
        "run.val_every_steps": 50 * 600, "data.max_gap": 300, "data.search.center_jitter": 3.5,
        "data.search.scale_jitter": 0.5, "data.search.number": 1, "data.train.sample_per_epoch": 76800,
        "data.train.datasets_name": ("LASOT", "GOT10K_vottrain", "COCO17", "TRACKINGNET"),
        "data.val.datasets_name": ("GOT10K_votval",), "model.prenum": 0,
    }),
    ("fartrack_distill", {
        "train.lr": 4e-5, "train.weight_decay": 1e-4, "train.batch_size": 32, "train.epoch": 500,
        "train.lr_drop_epoch": 400, "train.backbone_multiplier": 1.0, "run.num_workers": 10,
        "run.val_every_steps": 20 * 600, "data.max_gap": 200, "data.search.center_jitter": 3.5,
        "data.search.scale_jitter": 0.5,
        "data.search.number": 1, "data.train.sample_per_epoch": 76800,
        "data.train.datasets_name": ("LASOT", "GOT10K_vottrain", "COCO17", "TRACKINGNET"),
        "data.val.datasets_name": ("GOT10K_votval",), "model.prenum": 0,
    }),
    ("fartrack_sparse", {
        "train.lr": 4e-6, "train.weight_decay": 0.05, "train.batch_size": 8, "train.epoch": 20,
        "train.lr_drop_epoch": 999, "train.backbone_multiplier": 0.1, "run.num_workers": 12,
        "run.val_every_steps": 10 * 31, "data.max_gap": 300, "data.max_interval": 5, "data.interval_prob": 0.0,
        "data.search.center_jitter": 3.0, "data.search.scale_jitter": 0.25, "data.search.number": 32,
        "data.train.sample_per_epoch": 1000,
        "data.train.datasets_name": ("LASOT", "GOT10K_vottrain", "TRACKINGNET"),
        "data.train.datasets_ratio": (1, 1, 1), "data.val.datasets_name": ("GOT10K_official_val",),
        "model.prenum": 3,
    }),
])
def test_hyper_parameters_equal_the_original_yaml(stage, expected):
  config = get_config(stage, "variant=tiny")
  for path, value in expected.items():
    node = config
    for key in path.split("."):
      node = node[key]
    assert node == pytest.approx(value) if isinstance(value, float) else node == value, path


@pytest.mark.parametrize("stage", STAGES)
def test_values_shared_by_every_stage_yaml(stage):
  config = get_config(stage)
  m, d, t, e = config.model, config.data, config.train, config.test
  assert (m.embed_dim, m.num_heads, m.patch_size, m.num_blocks, m.extension) == (192, 3, 16, 12, 3)
  assert (m.bins, m.range) == (300, 2)
  assert m.pretrain_file == "mae_tiny_distill_400e.pth.tar"
  assert m.pretrain_pth == ""  # The YAMLs' absolute /data5/... paths are not carried over.
  assert (d.template.number, d.template.size, d.template.factor) == (5, 112, 2.0)
  assert (d.search.size, d.search.factor) == (224, 4.0)
  assert d.mean == (0.485, 0.456, 0.406) and d.std == (0.229, 0.224, 0.225)
  assert (e.template_factor, e.template_size, e.search_factor, e.search_size) == (2.0, 112, 4.0, 224)
  assert (t.giou_weight, t.l1_weight, t.grad_clip_norm, t.drop_path_rate) == (2.0, 0.0, 0.1, 0.1)
  assert t.optimizer == "ADAMW" and t.scheduler.type == "step"
  assert t.special_token_weight == 0.1 and t.siou_theta == 4 and t.seq_grad_clip_norm == 100.0


def test_stage_specific_model_switches():
  sparse = get_config("fartrack_sparse").model
  assert sparse.masked_norm is True and sparse.word_max_norm == 1.0 and sparse.masked_norm_eps == 1e-5
  assert sparse.train_prune_ratio == 0.25 and sparse.track_prune_ratios == (0.25, 0.5, 0.75, 0.9)
  for stage in ("fartrack", "fartrack_distill"):
    model = get_config(stage).model
    assert model.masked_norm is False and model.word_max_norm == 0.0 and model.prenum == 0
    assert model.norm_eps == 1e-6


def test_actor_loss_weights_are_the_ones_that_train():
  # Stage 1 and distill actors use focal (CE) weight 2; the sparse actor overwrites it with 0.
  assert get_config("fartrack").train.ce_weight == 2.0
  assert get_config("fartrack_distill").train.ce_weight == 2.0
  assert get_config("fartrack_sparse").train.ce_weight == 0.0
  # The distill loss adds 0.01 * KL literally (loss_weight['KL'] = 100 is never read).
  assert get_config("fartrack_distill").train.kl_weight == 0.01


@pytest.mark.parametrize("stage", STAGES)
def test_smoke_variant_is_small(stage):
  config = get_config(stage, "variant=smoke")
  m, d, t = config.model, config.data, config.train
  assert (m.depth, m.num_blocks, m.extension) == (2, 1, 1)
  assert m.embed_dim <= 64 and m.embed_dim % m.num_heads == 0
  assert m.bins == 16 and m.pretrain_grid == 4
  assert d.template.size <= 64 and d.search.size <= 64
  assert (d.template.size, d.search.size) == (32, 64)
  assert (config.test.template_size, config.test.search_size) == (32, 64)
  assert d.template.number == 2
  assert d.search.number == (4 if stage == "fartrack_sparse" else 1)
  assert d.train.datasets_name == ("SYNTHETIC",) and d.val.datasets_name == ("SYNTHETIC",)
  assert d.train.datasets_ratio == (1,) and d.val.datasets_ratio == (1,)
  assert d.train.sample_per_epoch == 8
  assert (t.batch_size, t.epoch, t.lr_drop_epoch, config.run.num_workers) == (2, 2, 1, 0)


def test_clip_canvas_only_in_the_sparse_stage():
  # Ours (the clip frames' static shape for on-device crops), not the original's: 640 real, 96 smoke.
  assert get_config("fartrack_sparse", "variant=tiny").data.clip_canvas == 640
  assert get_config("fartrack_sparse", "variant=smoke").data.clip_canvas == 96
  for stage in ("fartrack", "fartrack_distill"):
    assert "clip_canvas" not in get_config(stage).data


# Each entry: (stage, dotted field, bad value, other fields to set first).
_INVALID = [
    ("fartrack", "model.depth", 0, {}),
    ("fartrack", "model.depth", 16, {}),
    ("fartrack_sparse", "model.depth", 16, {}),
    ("fartrack", "data.template.size", 120, {"test.template_size": 120}),
    ("fartrack", "data.search.size", 230, {"test.search_size": 230}),
    ("fartrack", "data.train.datasets_name", ("LASOT", "GOT10K_vottrain", "COCO17", "IMAGENET"), {}),
    ("fartrack_sparse", "data.val.datasets_name", ("NOPE",), {}),
    ("fartrack", "data.train.datasets_ratio", (1, 1), {}),
    ("fartrack", "data.val.datasets_ratio", (1, 1), {}),
    ("fartrack", "model.embed_dim", 190, {}),
    ("fartrack", "dtype", "float16", {}),
    ("fartrack", "test.template_size", 128, {}),
    ("fartrack", "test.search_size", 256, {}),
    ("fartrack_distill", "model.logit_layers", (4, 15), {}),
    ("fartrack_distill", "model.logit_layers", (-1,), {}),
    ("fartrack_distill", "model.logit_layers", tuple(range(4, 15)), {"model.depth": 10}),
    ("fartrack", "model.bins", 1, {}),
    ("fartrack", "model.range", 0, {}),
    ("fartrack", "model.prenum", -1, {}),
    ("fartrack", "data.template.number", 0, {}),
    ("fartrack_sparse", "data.template.number", 1, {}),
    ("fartrack_sparse", "model.train_prune_ratio", 1.0, {}),
    ("fartrack_sparse", "model.track_prune_ratios", (0.25, 0.0), {}),
    ("fartrack_sparse", "data.clip_canvas", 8, {}),
    ("fartrack", "stage", "fartrack_seq", {}),
    ("fartrack", "variant", "huge", {}),
]


@pytest.mark.parametrize("stage,path,value,first", _INVALID,
                         ids=[f"{s}-{p}={v!r}" for s, p, v, _ in _INVALID])
def test_invalid_value_names_its_field(stage, path, value, first):
  config = get_config(stage)
  for key, ok_value in first.items():
    _set(config, key, ok_value)
  _set(config, path, value)
  with pytest.raises(ValueError, match=path.replace(".", r"\.")):
    config_lib.validate_config(config)


def test_depth_error_message_names_the_range():
  config = get_config("fartrack")
  config.model.depth = 16
  with pytest.raises(ValueError) as e:
    config_lib.validate_config(config)
  assert str(e.value) == "model.depth=16 is out of range 1..15 (model.num_blocks + model.extension)"


def _set(config, path, value):
  *parents, last = path.split(".")
  node = config
  for key in parents:
    node = node[key]
  node[last] = value


def test_parse_arg():
  assert config_lib.parse_arg(None).variant == "tiny"
  assert config_lib.parse_arg("").variant == "tiny"
  assert config_lib.parse_arg("tiny").variant == "tiny"
  assert config_lib.parse_arg("nano").variant == "nano"
  assert config_lib.parse_arg("variant=nano").variant == "nano"
  options = config_lib.parse_arg("variant=pico,foo=bar")
  assert options.variant == "pico" and options.foo == "bar"
  assert config_lib.parse_arg("smoke,flag").flag is True
  assert config_lib.parse_arg("variant=smoke,seed=3").seed == 3
  assert config_lib.parse_arg("res=128", res=224).res == 128  # Typed by the spec's default.
  with pytest.raises(ValueError, match="huge") as e:
    config_lib.parse_arg("variant=huge")
  for allowed in ("tiny", "nano", "pico", "smoke"):
    assert allowed in str(e.value)
  with pytest.raises(ValueError, match="seed"):
    config_lib.parse_arg("seed=abc")


def test_get_config_applies_and_rejects_options():
  config = get_config("fartrack", "variant=smoke,dtype=bfloat16,seed=7")
  assert config.dtype == "bfloat16" and config.seed == 7
  with pytest.raises(ValueError, match="dtype"):
    get_config("fartrack", "dtype=float16")
  with pytest.raises(ValueError, match="foo"):
    get_config("fartrack", "variant=pico,foo=bar")
  with pytest.raises(ValueError, match="huge"):
    get_config("fartrack_sparse", "huge")


def test_loads_through_config_flags_with_arg_and_overrides():
  # How the entry points load a config: a file path with `:arg`, then dotted command-line overrides.
  path = os.path.join(CONFIGS, "fartrack_distill.py")
  argv = ["prog", f"--config={path}:variant=pico", "--config.train.lr=0.001"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  config = config_lib.validate_config(flag_values.config)
  assert config.stage == "fartrack_distill" and config.model.depth == 6
  assert config.model.logit_layers == (4, 5) and config.train.lr == 0.001


def test_no_field_is_one_the_code_never_reads():
  # The original's fields that configure nothing FARTrack builds were deleted (docs/configs.md lists them).
  for stage in STAGES:
    config = get_config(stage)
    for path in ("model.head", "model.decoder", "model.ce_loc", "model.cat_mode", "model.backbone_type",
                 "data.sampler_mode", "data.temp", "train.amp", "train.freeze_layers", "train.num_worker",
                 "train.print_interval", "train.scheduler.decay_rate", "test.epoch", "test.template_sampling"):
      *parents, last = path.split(".")
      node = config
      for key in parents:
        node = node[key]
      assert last not in node, (stage, path)


def test_quickstart_config_is_the_learnable_smoke_recipe():
  config = get_config("quickstart", "stage1_steps=200")
  assert (config.train_videos, config.val_videos) == (64, 8)
  for name, stage, steps, batch in (("stage1", "fartrack", 200, 16), ("distill", "fartrack_distill", 100, 16),
                                    ("sparse", "fartrack_sparse", 100, 8)):
    sub = config[name]
    assert sub.stage == stage and sub.variant == "smoke" and sub.run.max_steps == steps
    assert (sub.model.patch_size, sub.model.bins, sub.train.global_batch_size) == (8, 32, batch)
    assert sub.data.train.sample_per_epoch == steps * batch and sub.train.scheduler.type == "cosine"
    assert sub.data.train.datasets_name == ("GOT10K_vottrain",)
  assert get_config("quickstart").stage1.run.max_steps == 16000
  with pytest.raises(ValueError, match="stage1_steps"):
    get_config("quickstart", "stage1_steps=many")


def test_data_path_comparison_config():
  config = get_config("compare_data_paths", "steps=40,seed=2")
  assert config.stage == "fartrack" and config.seed == 2 and config.run.max_steps == 40
  assert (config.model.patch_size, config.train.global_batch_size, config.train.lr) == (8, 16, 1e-3)
  assert config.run.val_every_steps == 40 and config.run.data_path == "frames"


def test_a_checkpoint_saved_with_the_deleted_fields_still_resumes():
  from fartrack_jax.training import checkpoint_manager  # pylint: disable=g-import-not-at-top
  config = get_config("fartrack_sparse", "smoke")
  # What a checkpoint saved before the unread fields were deleted holds in its meta.
  old_model = dict(config.model.to_dict(), cat_mode="direct", ce_loc=(), backbone_type="vit_tiny_patch16_224",
                   head={"type": "PIX", "num_heads": 12}, decoder={"type": "mask", "depth": 8})
  checkpoint_manager.check_same_model({"stage": "fartrack_sparse", "model": old_model}, config, "ckpt", 4)
  with pytest.raises(checkpoint_manager.ModelMismatchError, match="model.embed_dim: checkpoint 36, config 48"):
    checkpoint_manager.check_same_model({"stage": "fartrack_sparse", "model": dict(old_model, embed_dim=36)},
                                   config, "ckpt", 4)
