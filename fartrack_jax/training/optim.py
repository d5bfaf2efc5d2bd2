"""The optimizer of every stage: the original's AdamW param groups and step schedule, in optax.

The original (`lib/train/base_functions.py::get_optimizer_scheduler_fartrack`) builds three AdamW groups:
  - parameters outside `backbone` (only `identity`, the template-slot embedding): `train.lr`;
  - `backbone` parameters whose name holds `output_bias`, `embeddings` or `extension`
    (`train.full_lr_param_patterns`: the output bias, word/position embeddings, extension blocks): `train.lr`;
  - every other `backbone` parameter (ViT blocks, patch embedding, positional embeddings, final norm):
    `train.lr * train.backbone_multiplier`;
with `torch.optim.AdamW` defaults (betas 0.9/0.999, eps 1e-8) and `weight_decay=train.weight_decay`, decoupled
and scaled by each group's learning rate, as `optax.adamw` does, except that torch multiplies the param by
`1 - lr * weight_decay` rounded to float32 (`torch_adamw`). `StepLR(step_size=train.lr_drop_epoch)` is
stepped once per epoch and multiplies by 0.1 (its default gamma: the original never passes
its TRAIN.SCHEDULER.DECAY_RATE), so in steps: lr(step) = lr * 0.1 ** floor(step / (lr_drop_epoch *
steps_per_epoch)).

Parameters the forward never reads (MAE's class token and 14x14 positional embedding, the unused template
positional embeddings, the sparse stage's previous-box table, unmasked norms of the sparse model) get no
gradient in PyTorch, and AdamW skips a parameter without a gradient entirely (no weight decay either). Here
they are labelled `frozen` and left unchanged, so a checkpoint trained here converts back exactly like the
original's.

The sparse model's word embedding is `nn.Embedding(max_norm=1)`: every forward renormalises the command-token
rows of the stored weight in place, so AdamW (its decay and its step) starts from the renormalised rows,
and the trained weights are those. `make_optimizer` reproduces it (`_from_renormed_command_rows`); without
it the stored rows keep their init norm (about 7 at a random init) and the effective embedding learns
several times slower than the original's.

Gradients are clipped to `train.grad_clip_norm` (stages 1 and 2, `LTRTrainer`) or `train.seq_grad_clip_norm`
(the sparse trainer's hard-coded 100) by global norm before the update, as `clip_grad_norm_` over all
parameters does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fartrack_jax import convert
from fartrack_jax import model as model_lib

GROUPS = ("full_lr", "backbone", "frozen")
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
STEP_LR_GAMMA = 0.1


def steps_per_epoch(config) -> int:
  """Optimizer steps per epoch: `data.train.sample_per_epoch` samples (the original's epoch length, over all
  processes) in global batches of `train.global_batch_size`; the last partial batch is dropped."""
  steps = int(config.data.train.sample_per_epoch) // int(config.train.global_batch_size)
  if steps < 1:
    raise ValueError(f"data.train.sample_per_epoch={config.data.train.sample_per_epoch} is smaller than "
                     f"train.global_batch_size={config.train.global_batch_size}: an epoch would have no step")
  return steps


def total_steps(config) -> int:
  return int(config.train.epoch) * steps_per_epoch(config)


def learning_rate_schedule(config, base_lr: float) -> optax.Schedule:
  """`train.scheduler.type`: "step" is `StepLR` in steps, `base_lr * 0.1 ** floor(step / (train.lr_drop_epoch
  * steps_per_epoch))`; "cosine" (not in the original) rises linearly from 0 over
  `train.scheduler.warmup_steps`, then decays to 0 along a cosine at the last step of `train.epoch` epochs."""
  kind = config.train.scheduler.type
  if kind == "cosine":
    total = total_steps(config)
    warmup = min(int(config.train.scheduler.get("warmup_steps", 0)), total - 1)
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, warmup_steps=warmup, decay_steps=total)
  if kind != "step":
    raise ValueError(f"train.scheduler.type={kind!r} is not supported (one of 'step', the original's, "
                     "and 'cosine')")
  return optax.exponential_decay(base_lr, transition_steps=int(config.train.lr_drop_epoch) *
                                 steps_per_epoch(config), decay_rate=STEP_LR_GAMMA, staircase=True)


def param_labels(params, config) -> dict:
  """The group (one of GROUPS) of every param, a tree shaped like `params`."""
  spec = model_lib.ModelSpec.from_config(config)
  patterns = tuple(config.train.full_lr_param_patterns)
  by_path = {}
  for entry in convert.key_map(spec):
    if not entry.required:
      group = "frozen"
    elif not entry.torch_key.startswith("backbone."):
      group = "full_lr"
    elif any(p in entry.torch_key for p in patterns):
      group = "full_lr"
    else:
      group = "backbone"
    by_path[entry.flax_path] = group

  def label(path, _):
    names = tuple(getattr(k, "key", str(k)) for k in path)
    if names not in by_path:
      raise KeyError(f"param {'/'.join(names)} has no original key; cannot assign an optimizer group")
    return by_path[names]

  return jax.tree_util.tree_map_with_path(label, params)


def _decay_then_scale(schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
  """torch.optim.AdamW's update as the change of the param: `param.mul_(1 - lr * weight_decay)`, rounded to
  the param's float32 grid, then `- lr * update` added and rounded again.

  torch multiplies by a float32 factor, so the decay it applies is `lr * wd` rounded to the float32 spacing
  below 1 (2**-24 = 5.96e-8): lr 4e-4 x wd 1e-4 decays by 5.96e-8 per step, not 4e-8, and lr 4e-5 x wd 1e-4
  (stage 1's backbone, all of stage 2) by exactly nothing. And it rounds the decayed param before adding
  the step: with the decay below one ulp of the weight (5.96e-8 x 3 against an ulp of 2.4e-7), one
  rounding of `param + decay + step` lands one ulp away from torch's two in about a quarter of the
  weights, every step. A float multiply feeding an add is fused into one FMA by XLA (optimization
  barriers do not stop it), so the decayed param is written as `p - p * d` with `d = 1 - factor` (exact,
  a multiple of 2**-24): that subtraction rounds to `round(p * factor)`, fused or not, before the step is
  added. The update is `new - p`, exact (Sterbenz) wherever the step is smaller than the weight, so
  `optax.apply_updates` lands on `new`."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("weight decay needs params")
    lr = jnp.asarray(schedule(state.count), jnp.float32)
    decay = jnp.float32(1.0) - (jnp.float32(1.0) - lr * jnp.float32(weight_decay))

    def step(u, p):
      decayed = p - p * decay
      return (decayed - lr * u) - p

    updates = jax.tree_util.tree_map(step, updates, params)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def torch_adamw(schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
  """`optax.adamw` with torch.optim.AdamW's float32 decay factor (`_decay_then_scale`); its state has the
  tree structure of `optax.adamw`'s (checkpoints written before restore)."""
  return optax.chain(optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS), optax.identity(),
                     _decay_then_scale(schedule, weight_decay))


def make_optimizer(config, params) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
  """AdamW over the original's param groups with the step schedule, after global-norm clipping.

  Returns the transformation and the learning-rate schedule of each trained group (for logging).
  """
  if config.train.optimizer != "ADAMW":
    raise ValueError(f"train.optimizer={config.train.optimizer!r} is not supported (only 'ADAMW')")
  lr = float(config.train.lr)
  schedules = {"full_lr": learning_rate_schedule(config, lr),
               "backbone": learning_rate_schedule(config, lr * float(config.train.backbone_multiplier))}
  wd = float(config.train.weight_decay)
  transforms = {name: torch_adamw(schedule, wd) for name, schedule in schedules.items()}
  transforms["frozen"] = optax.set_to_zero()
  clip = float(config.train.seq_grad_clip_norm if config.stage == "fartrack_sparse"
               else config.train.grad_clip_norm)
  chain = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  chain.append(optax.multi_transform(transforms, param_labels(params, config)))
  tx = optax.chain(*chain)
  spec = model_lib.ModelSpec.from_config(config)
  if spec.word_max_norm > 0:
    tx = _from_renormed_command_rows(tx, spec)
  return tx, schedules


def _from_renormed_command_rows(inner: optax.GradientTransformation, spec) -> optax.GradientTransformation:
  """`inner` applied to the params with the word embedding's command rows renormalised first (what the
  original's forward leaves in the stored weight before `optimizer.step()`); the update of those rows is
  then `renormed + inner update - params`."""
  idx = np.asarray(spec.command_tokens)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("the sparse stage's optimizer needs params (the command rows are renormalised)")
    renormed = dict(params)
    table = jnp.asarray(params["word_embeddings"])
    renormed["word_embeddings"] = model_lib.renorm_command_rows(table, spec)
    updates, state = inner.update(updates, state, renormed)
    rows = jnp.zeros(table.shape[:1], bool).at[idx].set(True)[:, None]
    word = updates["word_embeddings"]
    updates = dict(updates)
    updates["word_embeddings"] = jnp.where(rows, renormed["word_embeddings"] + word - table, word)
    return updates, state

  return optax.GradientTransformation(inner.init, update)
