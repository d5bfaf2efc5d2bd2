"""Training parity with the original PyTorch FARTrack, step by step.

Both trainings start from the same weights (the original's random init, or an original checkpoint) and
take the same batches; each step records the loss terms, IoU, learning rates and gradient norm of both,
and every `every` steps the largest difference between their parameters.

The original side (`OriginalTrainer`, needs torch and a checkout, see `parity.py`) is built from the
checkout's own pieces: its model classes (`parity.load_original`), its actor (`lib.train.actors.<stage>`,
with `train_script.py`'s loss weights and objectives), its optimizer and scheduler builder
(`base_functions.get_optimizer_scheduler_fartrack`), and its trainers' update: `LTRTrainer` (zero_grad,
backward, `clip_grad_norm_(net.parameters(), GRAD_CLIP_NORM)`, step) for stages 1 and 2;
`LTRSeqTrainerSparse` (explore under no_grad in eval mode, then one backward per clip, clip at 100, step)
for stage 3; `StepLR` stepped once per epoch of `steps_per_epoch` steps. Randomness is off: drop-path 0
on both sides.

This project's side (`OurTrainer`) is the library's jitted train step (`steps.make_train_step` over
`stages.frame_loss_fn` / `sparse.sequence_loss_fn` and `optim.make_optimizer`), on one device.

Nothing here imports torch at module level: the CI fixtures (`write_fixture` / `read_fixture`) replay a
recorded run of the original through `OurTrainer` alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import types
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.training import processing
from fartrack_jax import convert
from fartrack_jax import model as model_lib
from fartrack_jax import parity
from fartrack_jax.training import optim, sparse, stages, steps

# Step-1 losses: float32 on both sides, the same weights and inputs: the forward agrees to ~1e-6
# relative (logits 1e-4 absolute on O(10) values), so 1e-5 relative is tight but not flaky.
STEP1_REL_TOLERANCE = 1e-5
# The curves: float-order noise grows with the steps; the loss may part by this much relative (or
# absolute for losses near 0) at any step before the verdict says they differ.
CURVE_REL_TOLERANCE = 1e-2
CURVE_ABS_TOLERANCE = 1e-3

# Each stage's logged terms: ours -> the original actor's status key.
TERMS = {
    "fartrack": {"siou": "Loss/giou", "ce": "Loss/location", "l1": "Loss/l1", "iou": "IoU"},
    "fartrack_distill": {"siou": "Loss/giou_mean", "ce": "Loss/location_mean", "kl": "Loss/KL_mean",
                         "l1": "Loss/l1", "iou": "IoU"},
    "fartrack_sparse": {"siou": "Loss/giou", "l1": "Loss/l1", "iou": "IoU", "explore_iou": "explore_iou"},
}
ORIGINAL_GROUPS = ("identity", "backbone", "full_lr")  # get_optimizer_scheduler_fartrack's group order
OUR_GROUP_OF = {"identity": "full_lr", "backbone": "backbone", "full_lr": "full_lr"}


def parity_config(config) -> ml_collections.ConfigDict:
  """`config` with randomness off (drop-path 0) and float32 unless asked otherwise."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.drop_path_rate = 0.0
  return config


def original_logit_layers(config) -> tuple[int, ...]:
  """The layers whose logits the original distill model returns (`extra_list` then `feat`): blocks 4..11
  and extension blocks 0 and 1 of those kept, then the last layer."""
  m = config.model
  blocks = range(min(m.depth, m.num_blocks))
  ext = range(max(0, m.depth - m.num_blocks))
  layers = [j for j in blocks if 4 <= j <= 11] + [m.num_blocks + i for i in ext if i in (0, 1)]
  return tuple(layers) + (m.depth - 1,)


def check_config(config) -> None:
  """ValueError when the original cannot train `config` the way ours does (a shape it hard-codes)."""
  if config.stage == "fartrack_distill" and tuple(config.model.logit_layers) != original_logit_layers(config):
    raise ValueError(f"model.logit_layers={tuple(config.model.logit_layers)}: the original's distill model "
                     f"emits logits at layers {original_logit_layers(config)} for this depth; pass "
                     f"--config.model.logit_layers=\"{original_logit_layers(config)}\"")
  if config.stage == "fartrack_sparse":
    spec = model_lib.ModelSpec.from_config(config)
    if (spec.num_templates, spec.search_size // spec.patch_size, spec.num_tokens) != (5, 14, 445):
      raise ValueError("the original's sparse stage hard-codes 5 templates, a 14x14 search grid and 445 "
                       "tokens; use data.template.number=5, data.template.size=112, data.search.size=224 "
                       "(model.pretrain_grid=14)")
  if config.train.scheduler.type != "step":
    raise ValueError("the original has only the step schedule; use --config.train.scheduler.type=step")


# ------------------------------------------------------------------------------------------------ batches


def synthetic_frame_batches(config, batch: int, num: int, seed: int) -> list[dict[str, np.ndarray]]:
  """`num` frame batches: uint8 template and search crops (16 grey levels, the target painted as a
  bright box in the search crop) and the search box (x, y, w, h normalised by the crop size)."""
  spec = model_lib.ModelSpec.from_config(config)
  rng = np.random.default_rng(seed)
  t, z, x = spec.num_templates, spec.template_size, spec.search_size
  out = []
  for _ in range(num):
    templates = (rng.integers(0, 16, (batch, t, z, z, 3)) * 17).astype(np.uint8)
    search = (rng.integers(0, 16, (batch, x, x, 3)) * 17).astype(np.uint8)
    wh = rng.uniform(0.1, 0.5, (batch, 2))
    xy = rng.uniform(0.0, 1.0 - wh)
    boxes = np.concatenate([xy, wh], -1).astype(np.float32)
    for b in range(batch):
      x0, y0 = (boxes[b, :2] * x).astype(int)
      x1, y1 = ((boxes[b, :2] + boxes[b, 2:]) * x).astype(int)
      search[b, y0:y1, x0:x1] = (230, 200, 40)
      templates[b, :, z // 4:3 * z // 4, z // 4:3 * z // 4] = (230, 200, 40)
    out.append({"templates_u8": templates, "search_u8": search, "search_box": boxes})
  return out


def _pipeline_dataset(config, data_roots: dict[str, str], batch: int, seed: int, cache_dir: str | None):
  """This project's training batches for `config` (as `train.py` builds them from dataset roots), in
  this process, without workers."""
  from data_pipelines.training import build, clips, pipeline  # pylint: disable=g-import-not-at-top
  datasets = build.train_datasets_from_config(config, data_roots, cache_dir)
  if config.stage == "fartrack_sparse":
    return clips.clip_dataset(build.clip_examples_from_config(config, datasets, seed), batch)
  return pipeline.frame_dataset(build.frame_examples_from_config(config, datasets, seed), batch)


def pipeline_batches(config, data_roots: dict[str, str], batch: int, num: int, seed: int,
                     cache_dir: str | None = None) -> list[dict[str, np.ndarray]]:
  """`num` batches drawn once from this project's pipeline. Frame batches keep the pipeline's normalised
  float crops (`templates`, `search`), which both sides then read as they are."""
  it = iter(_pipeline_dataset(config, data_roots, batch, seed, cache_dir))
  out = []
  for _ in range(num):
    b = {k: np.asarray(v) for k, v in next(it).items()}
    if config.stage != "fartrack_sparse":
      b = {k: b[k] for k in ("templates", "search", "search_box")}
    out.append(b)
  return out


def ours_frame_batch(config, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The train step's batch: normalised crops and the actor's target tokens."""
  templates, search = _normalized_crops(config, raw)
  tokens = np.stack([processing.box_to_tokens(b, config.model.bins, config.model.range)[1]
                     for b in raw["search_box"]])
  return {"templates": templates, "search": search, "search_box": raw["search_box"],
          "target_tokens": tokens.astype(np.int32)}


def _normalized_crops(config, raw) -> tuple[np.ndarray, np.ndarray]:
  """`[B, T, Hz, Wz, 3]`, `[B, Hx, Wx, 3]` float32: a pipeline batch's crops, or uint8 crops normalised."""
  if "templates" in raw:
    return np.asarray(raw["templates"], np.float32), np.asarray(raw["search"], np.float32)
  return parity.Inputs(raw["templates_u8"], raw["search_u8"], None).normalized(config)


def synthetic_clip_batches(config, batch: int, num: int, seed: int) -> list[dict[str, np.ndarray]]:
  """`num` clip batches (the layout of `data_pipelines/training/clips.py`): a bright target moving over
  blocky noise on frames of random real sizes inside the canvas (blocky so a fixture compresses)."""
  d = config.data
  rng = np.random.default_rng(seed)
  c, t, s = int(d.clip_canvas), int(d.template.number), int(d.search.number)
  out = []
  for _ in range(num):
    blocks = rng.integers(0, 8, (batch, t + s, c // 8 + 1, c // 8 + 1, 3)) * 30
    frames = np.repeat(np.repeat(blocks, 8, axis=2), 8, axis=3)[:, :, :c, :c].astype(np.uint8)
    sizes = np.zeros((batch, t + s, 2), np.int32)
    boxes = np.zeros((batch, t + s, 4), np.float32)
    for b in range(batch):
      h, w = int(rng.integers(c * 3 // 4, c + 1)), int(rng.integers(c * 3 // 4, c + 1))
      bw, bh = rng.uniform(0.15, 0.3) * w, rng.uniform(0.15, 0.3) * h
      x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      vx, vy = rng.uniform(-2, 2, 2)
      for k in range(t + s):
        x = float(np.clip(x + vx, 0, w - bw))
        y = float(np.clip(y + vy, 0, h - bh))
        sizes[b, k] = (h, w)
        boxes[b, k] = (x, y, bw, bh)
        frames[b, k, int(y):int(y + bh), int(x):int(x + bw)] = (230, 200, 40)
        frames[b, k, h:] = 0
        frames[b, k, :, w:] = 0
    out.append({"template_frames": frames[:, :t], "template_boxes": boxes[:, :t],
                "template_sizes": sizes[:, :t], "search_frames": frames[:, t:],
                "search_boxes": boxes[:, t:], "search_sizes": sizes[:, t:]})
  return out


# ---------------------------------------------------------------------------------------------- our side


class OurTrainer:
  """The library's jitted train step on one device, from an original state dict."""

  def __init__(self, config, state_dict: dict[str, np.ndarray], seed: int = 0):
    self.config = config
    self.spec = model_lib.ModelSpec.from_config(config)
    model = model_lib.build_model(config)
    init = model_lib.init_params(model_lib.build_model(config, "float32"), jax.random.key(seed))
    params, report = convert.torch_to_flax(state_dict, self.spec, init)
    if report.unused:
      raise ValueError(f"state dict keys the config has no place for: {report.unused[:5]}")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    tx, self.schedules = optim.make_optimizer(config, params)
    if config.stage == "fartrack_sparse":
      loss_fn = sparse.sequence_loss_fn(config, model)
    else:
      loss_fn = stages.frame_loss_fn(config, model)
    mesh = steps.make_train_mesh(1, jax.devices()[:1])
    state = steps.init_state(params, tx, seed)
    self.shardings = steps.state_shardings(state, mesh)
    self.state = jax.device_put(state, self.shardings)
    self._step = steps.make_train_step(loss_fn, tx, self.shardings, mesh, self.schedules)
    self._data = steps.batch_sharding(mesh)
    self._explore_boxes = (_explore_boxes_fn(model, config) if config.stage == "fartrack_sparse" else None)

  def batch(self, raw):
    if self.config.stage == "fartrack_sparse":
      return dict(raw)
    return ours_frame_batch(self.config, raw)

  def step(self, raw) -> dict[str, float]:
    batch = jax.device_put(self.batch(raw), self._data)
    self.state, metrics = self._step(self.state, batch)
    return {k: float(v) for k, v in jax.device_get(metrics).items()}

  def explore_boxes(self, raw) -> np.ndarray:
    """The boxes the explore pass tracks, [S-1, B, 4] (x, y, w, h), with the current params."""
    return np.asarray(self._explore_boxes(self.state["params"], raw))

  def state_dict(self) -> dict[str, np.ndarray]:
    return convert.flax_to_torch(jax.device_get(self.state["params"]), self.spec)


def _explore_boxes_fn(model, config):
  """`sparse.explore` re-run with the boxes it predicts kept (its records hold the crops, not the boxes)."""
  d, m = config.data, config.model

  @jax.jit
  def run(params, batch):
    from fartrack_jax.training import device_crop  # pylint: disable=g-import-not-at-top
    templates = sparse.template_crops(config, batch)
    first = batch["search_boxes"][:, 0].astype(jnp.float32)
    center0, size0 = first[:, :2] + 0.5 * first[:, 2:], first[:, 2:]
    mask0 = jnp.ones((first.shape[0], model.spec.num_tokens), bool)
    frames = jnp.moveaxis(batch["search_frames"][:, 1:], 1, 0)
    sizes = jnp.moveaxis(batch["search_sizes"][:, 1:], 1, 0)

    def track(carry, xs):
      center, size, mask = carry
      frame, size_hw = xs
      side = device_crop.context_side(size, d.search.factor)
      crop = jax.vmap(lambda f, hw, c, s: device_crop.get_subwindow(f, hw, c, s, d.search.size))
      search = sparse._normalize(crop(frame, size_hw, center, side), d.mean, d.std)  # pylint: disable=protected-access
      out = model.apply({"params": params}, templates, search, token_mask=mask, prune_mode="train",
                        deterministic=True)
      bins = jnp.argmax(out["coord_logits"], axis=-1).astype(jnp.float32)
      new_center, new_size = jax.vmap(lambda p, c, s, hw: device_crop.search_bins_to_image(
          p, c, s, hw, bins=m.bins, coord_range=m.range))(bins, center, side, size_hw)
      return (new_center, new_size, out["keep_masks"]), device_crop.center_size_to_xywh(new_center, new_size)

    _, boxes = jax.lax.scan(track, (center0, size0, mask0), (frames, sizes))
    return boxes

  return run


# ----------------------------------------------------------------------------------------- original side


def _original_cfg(torch_repo: str, config):
  """The checkout's stage config (its first YAML), with the values this run trains with set from
  `config`: sizes, bins, optimizer, schedule, loss weights."""
  cfg = parity._original_config(torch_repo, config.stage)  # pylint: disable=protected-access
  d, m, t = config.data, config.model, config.train
  cfg.MODEL.BINS, cfg.MODEL.RANGE, cfg.MODEL.PRENUM = int(m.bins), int(m.range), int(m.get("prenum", 3))
  cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE = int(d.template.size), int(d.search.size)
  cfg.DATA.TEMPLATE.NUMBER = int(d.template.number)
  cfg.DATA.TEMPLATE.FACTOR, cfg.DATA.SEARCH.FACTOR = float(d.template.factor), float(d.search.factor)
  cfg.DATA.MEAN, cfg.DATA.STD = list(d.mean), list(d.std)
  cfg.TRAIN.LR, cfg.TRAIN.WEIGHT_DECAY = float(t.lr), float(t.weight_decay)
  cfg.TRAIN.BACKBONE_MULTIPLIER = float(t.backbone_multiplier)
  cfg.TRAIN.LR_DROP_EPOCH = int(t.lr_drop_epoch)
  cfg.TRAIN.SCHEDULER.TYPE = "step"
  cfg.TRAIN.GRAD_CLIP_NORM = float(t.grad_clip_norm)
  cfg.TRAIN.GIOU_WEIGHT, cfg.TRAIN.L1_WEIGHT = float(t.giou_weight), float(t.l1_weight)
  cfg.TRAIN.DROP_PATH_RATE = 0.0
  return cfg


def _original_function(torch_repo: str, relpath: str, name: str):
  """One top-level function of a checkout module, compiled from its source without importing the module:
  `lib/train/base_functions.py` imports every dataset reader (pandas, lmdb, COCO tools) at the top, and
  its optimizer builder needs none of them (only torch and `is_main_process`)."""
  import ast  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.abspath(torch_repo), relpath)
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
  if not nodes:
    raise ValueError(f"{path} has no function {name}; is this a FARTrack checkout?")
  namespace = {"torch": torch, "is_main_process": lambda: False}
  exec(compile(ast.Module(body=nodes, type_ignores=[]), path, "exec"), namespace)  # pylint: disable=exec-used
  return namespace[name]


def _torch_normalize(tensor, mean, std, inplace=False):
  """torchvision.transforms.functional.normalize on a [C, H, W] float tensor (the sparse actor's only use
  of torchvision, which has no CPU build here)."""
  import torch  # pylint: disable=g-import-not-at-top
  mean_t = torch.as_tensor(mean, dtype=tensor.dtype)[:, None, None]
  std_t = torch.as_tensor(std, dtype=tensor.dtype)[:, None, None]
  if inplace:
    return tensor.sub_(mean_t).div_(std_t)
  return (tensor - mean_t) / std_t


class OriginalTrainer:
  """The original's model, actor, optimizer, scheduler and trainer update (see the module docstring)."""

  def __init__(self, torch_repo: str, config, seed: int = 0, state_dict: dict[str, np.ndarray] | None = None):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(seed)
    self.config = config
    self.stage = config.stage
    self.net = parity.load_original(torch_repo, config, seed)
    if state_dict is not None:
      parity.load_original_weights(self.net, state_dict, self.stage)
    cfg = _original_cfg(torch_repo, config)
    self.cfg = cfg
    actors = importlib.import_module(f"lib.train.actors.{self.stage}")
    box_ops = importlib.import_module("lib.utils.box_ops")
    if self.stage == "fartrack_sparse":
      actors.tvisf.normalize = _torch_normalize
    cls = {"fartrack": "FARTrackActor", "fartrack_distill": "FARTrackDistillActor",
           "fartrack_sparse": "FARTrackSparseActor"}[self.stage]
    settings = types.SimpleNamespace(batchsize=int(config.train.batch_size),
                                     num_template=int(config.data.template.number),
                                     grad_clip_norm=float(config.train.grad_clip_norm))
    objective = {"giou": box_ops.giou_loss, "l1": torch.nn.functional.l1_loss, "focal": None}
    score_key = "score_update" if self.stage == "fartrack_sparse" else "score"
    loss_weight = {"giou": cfg.TRAIN.GIOU_WEIGHT, "l1": cfg.TRAIN.L1_WEIGHT, "focal": 2.,
                   score_key: cfg.TRAIN.SCORE_WEIGHT}
    self.actor = getattr(actors, cls)(net=self.net, objective=objective, loss_weight=loss_weight,
                                      settings=settings, cfg=cfg, bins=cfg.MODEL.BINS,
                                      search_size=cfg.DATA.SEARCH.SIZE)
    self.optimizer, self.scheduler = _original_function(
        torch_repo, "lib/train/base_functions.py", "get_optimizer_scheduler_fartrack")(self.net, cfg)
    self.steps_per_epoch = optim.steps_per_epoch(config)
    self.aliases: dict[str, str] = {}  # set after the first backward pass (`storage_aliases`)
    self.step_count = 0
    self.epoch = 1

  def _frame_data(self, raw):
    import torch  # pylint: disable=g-import-not-at-top
    templates, search = _normalized_crops(self.config, raw)
    templates = torch.from_numpy(np.ascontiguousarray(templates.transpose(1, 0, 4, 2, 3)))  # [T, B, 3, H, W]
    search = torch.from_numpy(np.ascontiguousarray(search.transpose(0, 3, 1, 2)))[None]
    return {"template_images": templates, "search_images": search, "target_in_search_images": search,
            "search_anno": torch.from_numpy(np.array(raw["search_box"], np.float32))[None],
            "epoch": self.epoch}

  def _clip_data(self, raw):
    """The sequence sampler's dict: per clip, lists of real-size frames and boxes."""
    def frames(kind, b):
      return [np.ascontiguousarray(f[:h, :w]) for f, (h, w) in zip(raw[f"{kind}_frames"][b], raw[f"{kind}_sizes"][b])]
    num = raw["search_frames"].shape[0]
    return {"template_images": [frames("template", b) for b in range(num)],
            "template_annos": np.asarray(raw["template_boxes"], np.float64),
            "search_images": [frames("search", b) for b in range(num)],
            "search_annos": [np.asarray(raw["search_boxes"][b], np.float64) for b in range(num)],
            "num_frames": [raw["search_frames"].shape[1]] * num}

  def lrs(self) -> dict[str, float]:
    """The learning rate of each of our groups, read from the original's param groups."""
    return {f"lr_{OUR_GROUP_OF[name]}": group["lr"]
            for name, group in zip(ORIGINAL_GROUPS, self.optimizer.param_groups) if name != "identity"}

  def step(self, raw) -> dict[str, float]:
    import torch  # pylint: disable=g-import-not-at-top
    lrs = self.lrs()
    if self.stage == "fartrack_sparse":
      metrics = self._sparse_step(raw)
    else:
      self.actor.train(True)
      self.optimizer.zero_grad()
      loss, status = self.actor(self._frame_data(raw))
      loss.backward()
      self.aliases = self.aliases or storage_aliases(self.net)
      grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.train.grad_clip_norm)
      self.optimizer.step()
      metrics = {ours: float(status[theirs]) for ours, theirs in TERMS[self.stage].items()}
      metrics["loss"] = float(loss.item())
      metrics["grad_norm"] = float(grad_norm)
    metrics.update(lrs)
    self.step_count += 1
    if self.step_count % self.steps_per_epoch == 0:  # BaseTrainer.train: scheduler.step() after each epoch
      self.scheduler.step()
      self.epoch += 1
    return metrics

  def _sparse_step(self, raw):
    """`LTRSeqTrainerSparse.cycle_dataset` for one batch, with its explore kept for the box comparison."""
    import torch  # pylint: disable=g-import-not-at-top
    data = self._clip_data(raw)
    self.actor.eval()
    boxes = []
    track = self.actor.batch_track

    def recording_track(*args, **kwargs):
      out = track(*args, **kwargs)
      if out is not None:
        boxes.append(np.asarray(out["pred_bboxes"], np.float64))
      return out

    self.actor.batch_track = recording_track
    try:
      with torch.no_grad():
        explore = self.actor.explore(data)
    finally:
      self.actor.batch_track = track
    if explore is None:
      raise RuntimeError("the original's explore skipped this batch (it needs 8 clips of valid frames)")
    self.explored_boxes = np.stack(boxes)  # [S-1, B, 4]
    num_seq = len(data["num_frames"])
    explore_iou = float(torch.mean(explore["baseline_iou"]).item())
    self.optimizer.zero_grad()
    self.actor.train()
    total, stats = 0.0, {}
    for cursor in range(num_seq):
      inputs = {"slt_loss_weight": 15,
                "search_images": explore["search_images"][:, cursor:cursor + 1],
                "mask": explore["mask"].squeeze(1)[:, cursor:cursor + 1],
                "search_anno": explore["search_anno"][:, cursor:cursor + 1],
                "pre_seq": explore["pre_seq"][:, cursor:cursor + 1],
                "x_feat": explore["x_feat"].squeeze(1)[:, cursor:cursor + 1],
                "template_images_z0": explore["template_images_z0"][:, cursor:cursor + 1],
                "epoch": self.epoch}
      loss, status = self.actor.compute_sequence_losses(inputs)
      loss.backward()
      total += float(loss.item())
      for key, val in status.items():
        stats[key] = stats.get(key, 0.0) + float(val) / num_seq
    self.aliases = self.aliases or storage_aliases(self.net)
    grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.train.seq_grad_clip_norm)
    self.optimizer.step()
    metrics = {ours: stats[theirs] for ours, theirs in TERMS[self.stage].items() if theirs in stats}
    metrics.update(loss=total, grad_norm=float(grad_norm), explore_iou=explore_iou)
    return metrics

  def state_dict(self) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()}


# ----------------------------------------------------------------------------------------------- compare


def storage_aliases(net) -> dict[str, str]:
  """`{name: name it shares storage with}` among the original's parameters, the source being the one that
  has a gradient (call after a backward pass). `finetune_track` wraps one tensor in several Parameters
  (`pos_embed_z0`, `pos_embed_z1`, and in the sparse model `pos_embed_z`): AdamW updates z0 in place, and
  the others, which no forward reads and which get no gradient, move with it. Ours keeps them where they
  were (frozen): the forward never reads them, so only an exported checkpoint shows the difference."""
  groups: dict[int, list] = {}
  for name, p in net.named_parameters(remove_duplicate=False):
    groups.setdefault(p.data_ptr(), []).append((name, p))
  aliases = {}
  for members in groups.values():
    sources = [name for name, p in members if p.grad is not None]
    if len(members) > 1 and sources:
      aliases.update({name: sources[0] for name, _ in members if name != sources[0]})
  return aliases


def with_aliases(state_dict: dict[str, np.ndarray], aliases: dict[str, str]) -> dict[str, np.ndarray]:
  """Our state dict as the original holds it: each aliased key reads the key it shares storage with."""
  out = dict(state_dict)
  for name, source in aliases.items():
    if source in out:
      out[name] = out[source]
  return out


def param_diff(theirs: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> tuple[float, str]:
  """Max |theirs - ours| over the keys both have, and the key where it is largest."""
  worst, where = 0.0, ""
  for k, v in ours.items():
    if k not in theirs:
      continue
    d = float(np.max(np.abs(np.asarray(theirs[k], np.float64) - v))) if v.size else 0.0
    if d > worst or not where:
      worst, where = d, k
  return worst, where


def _rel(a: float, b: float) -> float:
  return abs(a - b) / max(abs(a), abs(b), 1e-12)


@dataclasses.dataclass
class Result:
  stage: str
  config: dict
  steps: list[dict]
  tolerances: dict
  passed: bool
  verdict: str

  def to_json(self) -> dict:
    return {"stage": self.stage, "passed": self.passed, "verdict": self.verdict,
            "tolerances": self.tolerances, "config": self.config, "steps": self.steps}


def judge(stage: str, records: list[dict], step1_rel: float = STEP1_REL_TOLERANCE,
          curve_rel: float = CURVE_REL_TOLERANCE, curve_abs: float = CURVE_ABS_TOLERANCE) -> tuple[bool, str]:
  """The one-line verdict: step-1 losses within `step1_rel` relative, and every step's losses within
  `curve_rel` relative or `curve_abs` absolute."""
  if not records:
    return False, f"{stage}: FAIL, no steps"
  first = _rel(records[0]["loss_ours"], records[0]["loss_original"])
  parted = [r["step"] for r in records
            if not (abs(r["loss_ours"] - r["loss_original"]) <= curve_abs
                    or _rel(r["loss_ours"], r["loss_original"]) <= curve_rel)]
  diffs = [r["param_max_abs_diff"] for r in records if r.get("param_max_abs_diff") is not None]
  boxes = [r["explore_box_max_abs_diff"] for r in records if r.get("explore_box_max_abs_diff") is not None]
  passed = first <= step1_rel and not parted
  line = (f"{stage}: {'PASS' if passed else 'FAIL'} over {len(records)} steps; step-1 loss rel diff "
          f"{first:.2e} (tolerance {step1_rel:g}); losses part at {len(parted)} steps"
          f"{' from step ' + str(parted[0]) if parted else ''} (tolerance {curve_rel:g} rel or {curve_abs:g} abs)")
  if diffs:
    line += f"; param max |diff| {diffs[0]:.2e} first, {diffs[-1]:.2e} last"
  if boxes:
    line += f"; explored boxes max |diff| {max(boxes):.3g} px"
  return passed, line


def run_steps(ours: OurTrainer, theirs_steps: Iterable[dict], batches: list[dict], on_step=None) -> list[dict]:
  """Steps `ours` through `batches` beside the original's per-step records (`theirs_steps` yields, per
  step, a metrics dict and optionally `state_dict` with its `aliases`, `explored_boxes`). Returns the
  per-step records."""
  records = []
  for i, (raw, theirs) in enumerate(zip(batches, theirs_steps), start=1):
    boxes_ours = ours.explore_boxes(raw) if ours.config.stage == "fartrack_sparse" else None
    mine = ours.step(raw)
    rec = {"step": i, "loss_ours": mine["loss"], "loss_original": theirs["loss"]}
    for k, v in mine.items():
      if k in ("loss", "finite"):
        continue
      rec[f"{k}_ours"] = v
      if k in theirs:
        rec[f"{k}_original"] = theirs[k]
    rec["param_max_abs_diff"] = None
    if theirs.get("state_dict") is not None:
      rec["param_max_abs_diff"], rec["param_max_abs_diff_key"] = param_diff(
          theirs["state_dict"], with_aliases(ours.state_dict(), theirs["aliases"]))
    if boxes_ours is not None and theirs.get("explored_boxes") is not None:
      rec["explore_box_max_abs_diff"] = float(np.max(np.abs(boxes_ours - theirs["explored_boxes"])))
    records.append(rec)
    if on_step:
      on_step(rec)
  return records


def make_batches(config, batch: int, num: int, seed: int, data_roots: dict[str, str] | None = None):
  """The run's batches: from the pipeline over `data_roots`, or synthetic."""
  if data_roots:
    return pipeline_batches(config, data_roots, batch, num, seed)
  if config.stage == "fartrack_sparse":
    return synthetic_clip_batches(config, batch, num, seed)
  return synthetic_frame_batches(config, batch, num, seed)


def original_steps(original: OriginalTrainer, batches, every: int):
  for i, raw in enumerate(batches, start=1):
    metrics = original.step(raw)
    if i == 1 or i % every == 0 or i == len(batches):
      metrics["state_dict"] = original.state_dict()
      metrics["aliases"] = original.aliases
    if original.stage == "fartrack_sparse":
      metrics["explored_boxes"] = original.explored_boxes
    yield metrics


def run_train_parity(torch_repo: str, config, steps_: int, batch: int, every: int = 1, seed: int = 0,
                     init: str | None = None, data_roots: dict[str, str] | None = None,
                     allow_pickle: bool = False, curve_rel: float = CURVE_REL_TOLERANCE, on_step=None) -> Result:
  """Trains the original and ours side by side for `steps_` steps (see the module docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  config = parity_config(config)
  config.train.batch_size = batch
  config.train.global_batch_size = batch
  check_config(config)
  state_dict = None
  if init:
    from fartrack_jax import torch_io  # pylint: disable=g-import-not-at-top
    _, state_dict = torch_io.load_state_dict(init, allow_pickle=allow_pickle)
  original = OriginalTrainer(torch_repo, config, seed, state_dict)
  start = original.state_dict()
  ours = OurTrainer(config, start, seed)  # config.dtype is ours only: the original computes in float32
  d0, _ = param_diff(start, ours.state_dict())
  if d0 != 0.0:
    raise RuntimeError(f"the converted init differs from the original's by {d0:g}")
  batches = make_batches(config, batch, steps_, seed, data_roots)
  records = run_steps(ours, original_steps(original, batches, every), batches, on_step=on_step)
  passed, line = judge(config.stage, records, curve_rel=curve_rel)
  del torch
  return Result(config.stage, json.loads(config.to_json_best_effort()), records,
                {"step1_loss_rel": STEP1_REL_TOLERANCE, "curve_loss_rel": curve_rel,
                 "curve_loss_abs": CURVE_ABS_TOLERANCE}, passed, line)


# ---------------------------------------------------------------------------------------------- fixtures


def write_fixture(path: str, torch_repo: str, config, overrides: dict[str, Any], steps_: int, batch: int,
                  seed: int = 0) -> dict:
  """A CI fixture: float16-valued init weights (so both sides start from exactly the same float32
  numbers), the batches, the original's per-step metrics (and explored boxes), its final params."""
  import torch  # pylint: disable=g-import-not-at-top
  config = parity_config(config)
  config.train.batch_size = batch
  config.train.global_batch_size = batch
  check_config(config)
  net = parity.load_original(torch_repo, config, seed)
  init = {k: v.numpy().astype(np.float16) for k, v in net.state_dict().items()}
  original = OriginalTrainer(torch_repo, config, seed, {k: v.astype(np.float32) for k, v in init.items()})
  batches = make_batches(config, batch, steps_, seed)
  metrics = []
  for raw in batches:
    m = original.step(raw)
    if config.stage == "fartrack_sparse":
      m["explored_boxes"] = original.explored_boxes.tolist()
    metrics.append(m)
  final = original.state_dict()
  arrays = {f"init/{k}": v for k, v in init.items()}
  arrays.update({f"final/{k}": v.astype(np.float32) for k, v in final.items()})
  for i, raw in enumerate(batches):
    arrays.update({f"batch{i}/{k}": v for k, v in raw.items()})
  arrays["meta"] = np.array(json.dumps({"stage": config.stage, "overrides": overrides, "seed": seed,
                                        "steps": steps_, "batch": batch, "metrics": metrics,
                                        "aliases": original.aliases}))
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)
  del torch
  return {"metrics": metrics}


def read_fixture(path: str):
  """`(meta, init_state_dict, batches, final_state_dict)` of a `write_fixture` file."""
  with np.load(path) as f:
    meta = json.loads(str(f["meta"]))
    init = {k[5:]: f[k].astype(np.float32) for k in f.files if k.startswith("init/")}
    final = {k[6:]: f[k] for k in f.files if k.startswith("final/")}
    batches = []
    for i in range(meta["steps"]):
      prefix = f"batch{i}/"
      batches.append({k[len(prefix):]: f[k] for k in f.files if k.startswith(prefix)})
  return meta, init, batches, final


def fixture_config(meta) -> ml_collections.ConfigDict:
  config = parity_config(ml_collections.ConfigDict(meta["overrides"]))
  config.train.batch_size = meta["batch"]
  config.train.global_batch_size = meta["batch"]
  return config



def plot(result: Result, path: str) -> None:
  """Loss and IoU of both overlaid, and the param difference on a log axis (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  recs = result.steps
  x = [r["step"] for r in recs]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  axes[0].plot(x, [r["loss_original"] for r in recs], label="original (PyTorch, fp32)", lw=2.5, alpha=0.6)
  axes[0].plot(x, [r["loss_ours"] for r in recs], label=f"fartrack-jax ({result.config.get('dtype')})", lw=1)
  axes[0].set_title("loss")
  iou_key = "iou" if "iou_ours" in recs[0] else None
  if iou_key:
    axes[1].plot(x, [r.get("iou_original", np.nan) for r in recs], label="original", lw=2.5, alpha=0.6)
    axes[1].plot(x, [r["iou_ours"] for r in recs], label="fartrack-jax", lw=1)
  axes[1].set_title("IoU (train batch)")
  px = [(r["step"], r["param_max_abs_diff"]) for r in recs if r.get("param_max_abs_diff") is not None]
  if px:
    axes[2].semilogy([p[0] for p in px], [max(p[1], 1e-12) for p in px], "o-", ms=2)
  axes[2].set_title("max |param diff|")
  for ax in axes:
    ax.set_xlabel("step")
  axes[0].legend()
  axes[1].legend()
  fig.suptitle(result.verdict, fontsize=8)
  fig.tight_layout()
  tmp = f"{path}.tmp-{os.getpid()}.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
