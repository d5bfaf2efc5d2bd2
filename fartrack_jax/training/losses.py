"""The training losses of the three FARTrack stages, as pure JAX functions of the model's logits.

Coordinates live in the search crop normalised to [0, 1], with a vocabulary of V = bins * range + 5 classes:
`bins * range` coordinate classes, then 5 special tokens (4 command tokens and padding). Every stage decodes
a box as the softmax expectation of the 4 coordinate tokens' logits over a fixed grid (`coordinate_grid`)
and scores it with SIoU (`siou_loss`); stages 1 and 2 add a class-weighted cross-entropy on the quantised
corners, stage 2 adds an inter-layer KL, stage 3 trains on SIoU alone.

| stage | original (`lib/train/actors/...`) | ours |
|---|---|---|
| 1 `fartrack` | `fartrack.py`, `FARTrackActor.compute_losses` | `frame_loss` |
| 2 `fartrack_distill` | `fartrack_distill.py`, `FARTrackDistillActor.compute_losses` | `distill_loss` |
| 3 `fartrack_sparse` | `fartrack_sparse.py`, `FARTrackSparseActor.compute_sequence_losses` | `sequence_loss` |

All math is float32 (logits are cast), shapes are static and there is no Python control flow on traced
values, so each loss jits. The config is read at trace time: close over it, e.g.
`jax.jit(functools.partial(frame_loss, config=config))`. Metrics are scalars.

Weights come from the config: `train.giou_weight` (on SIoU), `train.ce_weight` (the actors' hard-coded
'focal' weight, 2 in stages 1-2 and 0 in stage 3), `train.l1_weight` (0 everywhere), `train.kl_weight` (0.01,
what the distill actor actually adds; see config_lib), `train.special_token_weight`, `train.siou_theta`.
The original's stage-1 and stage-2 actors compute the L1 loss but never add it to the total; ours adds
`l1_weight * l1` in every stage, which is the same while `train.l1_weight` is 0.
"""

from __future__ import annotations

import math
import jax
import jax.numpy as jnp
import numpy as np

NUM_SPECIAL_TOKENS = 5  # Command tokens x0, y0, x1, y1 and the padding token, after the coordinate classes.
# `SIoU_loss`'s epsilon (distance, enclosing box and shape denominators; not the IoU's).
SIOU_EPS = 1e-7
# `compute_sequence_losses` clamps its float targets to [0, bins * range - this] (in token units).
_SEQUENCE_TARGET_MARGIN = 0.0001

Metrics = dict[str, jax.Array]


def num_coordinate_classes(bins: int, coord_range: float) -> int:
  """`bins * range`, the number of coordinate classes (the first classes of the vocabulary)."""
  n = bins * coord_range
  if n != int(n) or n < 1:
    raise ValueError(f"model.bins * model.range = {bins} * {coord_range} is not a positive whole number of "
                     "coordinate classes")
  return int(n)


def class_weights(bins: int, coord_range: float, special_weight: float) -> jax.Array:
  """Cross-entropy class weights `[V]`: 1 for the `bins * range` coordinate classes, `special_weight` for the
  5 special tokens (the actors' `CrossEntropyLoss(weight=...)`, 0.1 there)."""
  n = num_coordinate_classes(bins, coord_range)
  weights = np.ones(n + NUM_SPECIAL_TOKENS, np.float32)
  weights[n:] = special_weight
  return jnp.asarray(weights)


def weighted_cross_entropy(logits, targets, weights) -> jax.Array:
  """`torch.nn.CrossEntropyLoss(weight=weights)` with its default mean reduction.

  Args:
    logits: `[..., V]` unnormalised scores (cast to float32).
    targets: `[...]` integer classes in [0, V) (not checked: they are traced values).
    weights: `[V]` class weights.

  Returns:
    Scalar `sum(w[t] * nll) / sum(w[t])` over all positions.
  """
  logits = jnp.asarray(logits, jnp.float32)
  targets = jnp.asarray(targets)
  weights = jnp.asarray(weights, jnp.float32)
  if targets.shape != logits.shape[:-1]:
    raise ValueError(f"targets {targets.shape} must be logits {logits.shape} without the class axis")
  if weights.shape != logits.shape[-1:]:
    raise ValueError(f"weights {weights.shape} must have one entry per class of logits {logits.shape}")
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  w = weights[targets]
  return jnp.sum(w * nll) / jnp.sum(w)


def coordinate_grid(bins: int, coord_range: float) -> np.ndarray:
  """The value of each coordinate class in the expectation decoding, `[bins * range]` float32.

  The actors' `mul = torch.range(0.5 - range/2, 0.5 + range/2 - 1/(bins*range), 2/(bins*range))`: `torch.range`
  includes its end, has `floor((end - start) / step) + 1` entries, and computes `start + i * step` in float64
  before rounding to float32; we do the same. For range 2 that is `-0.5 + i / bins`, i = 0 .. 2*bins - 1
  (a step of 1/bins, although the targets are quantised in steps of 1/(bins - 1)). For other ranges the
  grid's length differs from `bins * range` and the original fails to broadcast; so do we, with a message.
  """
  n = num_coordinate_classes(bins, coord_range)
  start = -0.5 * coord_range + 0.5
  end = 0.5 + 0.5 * coord_range - 1.0 / (bins * coord_range)
  step = 2.0 / (bins * coord_range)
  length = math.floor((end - start) / step) + 1
  if length != n:
    raise ValueError(f"model.bins={bins}, model.range={coord_range}: the original's decoding grid "
                     f"(torch.range) has {length} entries, not bins * range = {n}; only range 2 decodes")
  return (np.float64(start) + np.arange(length, dtype=np.float64) * np.float64(step)).astype(np.float32)


def expected_coordinates(logits, bins: int, coord_range: float) -> jax.Array:
  """The expectation decoding of the actors: softmax over the coordinate classes only (the 5 special tokens
  are dropped before the softmax), dotted with `coordinate_grid`.

  Args:
    logits: `[..., 4, V]` (V = bins * range + 5), cast to float32.

  Returns:
    `[..., 4]` corners (x0, y0, x1, y1) in search-crop units (0..1 inside the crop).
  """
  logits = jnp.asarray(logits, jnp.float32)
  grid = coordinate_grid(bins, coord_range)
  n = grid.shape[0]
  if logits.shape[-1] != n + NUM_SPECIAL_TOKENS:
    raise ValueError(f"logits have {logits.shape[-1]} classes; model.bins={bins} and model.range="
                     f"{coord_range} give {n} + {NUM_SPECIAL_TOKENS}")
  probs = jax.nn.softmax(logits[..., :n], axis=-1)
  return jnp.sum(probs * grid, axis=-1)


def _safe_sqrt(x):
  """sqrt with a zero gradient at 0 (jnp.sqrt's is infinite there, and inf * 0 poisons the backward pass)."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def siou_loss(pred, target, theta: float = 4) -> tuple[jax.Array, jax.Array]:
  """The original's `SIoU_loss` (top of `lib/train/actors/fartrack.py`; the distill and sparse actors carry
  identical copies), the SIoU of Gevorgyan 2022: `1 - IoU + (shape cost + distance cost) / 2`.

  Args:
    pred: `[N, 4]` boxes (x0, y0, x1, y1).
    target: `[N, 4]` boxes (x0, y0, x1, y1).
    theta: shape-cost exponent (`train.siou_theta`).

  Returns:
    `(loss [N], iou [N])`, float32.

  What it computes, with eps = 1e-7, centres c = corner means, and d = c_target - c_pred:
    angle   `A = 1 - 2 sin^2(arcsin(|dy| / (|d| + eps)) - pi/4)` (= sin(2 alpha), 0 when the centres
            coincide: |dy| = 0 then);
    distance `sum over x, y of 1 - exp(-(2 - A) * (d / (C + eps))^2)`, C the enclosing box's width/height;
    shape   `sum over w, h of (1 - exp(-|p - t| / (max(p, t) + eps)))^theta`;
    IoU     `overlap / (area_p + area_t - overlap)`.
  Quirks kept: the IoU has no epsilon (two zero-area boxes give NaN) and the areas are not clamped, so an
  inverted box (x1 < x0) yields a negative area and a meaningless IoU, as in the original. One departure,
  gradients only: the original's `(dx^2 + dy^2) ** 0.5` has an infinite derivative at 0, so when the two
  centres coincide exactly its backward pass gives NaN for every coordinate; ours uses a sqrt whose
  gradient is 0 there (the loss values are the same).
  """
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  if pred.ndim != 2 or pred.shape[-1] != 4 or pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} must both be [N, 4] (x0, y0, x1, y1)")
  eps = np.float32(SIOU_EPS)
  px0, py0, px1, py1 = (pred[:, i] for i in range(4))
  tx0, ty0, tx1, ty1 = (target[:, i] for i in range(4))
  cx_pred, cy_pred = (px0 + px1) / 2, (py0 + py1) / 2
  cx_gt, cy_gt = (tx0 + tx1) / 2, (ty0 + ty1) / 2

  # Angle cost.
  dist = _safe_sqrt((cx_pred - cx_gt) ** 2 + (cy_pred - cy_gt) ** 2)
  sin_alpha = (jnp.maximum(cy_gt, cy_pred) - jnp.minimum(cy_gt, cy_pred)) / (dist + eps)
  angle = 1 - 2 * jnp.sin(jnp.arcsin(sin_alpha) - np.float32(np.pi / 4)) ** 2

  # Distance cost, relative to the smallest enclosing box.
  enclose_w = jnp.maximum(px1, tx1) - jnp.minimum(px0, tx0)
  enclose_h = jnp.maximum(py1, ty1) - jnp.minimum(py0, ty0)
  rho_x = ((cx_gt - cx_pred) / (enclose_w + eps)) ** 2
  rho_y = ((cy_gt - cy_pred) / (enclose_h + eps)) ** 2
  gamma = 2 - angle
  distance = (1 - jnp.exp(-gamma * rho_x)) + (1 - jnp.exp(-gamma * rho_y))

  # Shape cost.
  w_pred, h_pred = px1 - px0, py1 - py0
  w_gt, h_gt = tx1 - tx0, ty1 - ty0
  omega_w = jnp.abs(w_pred - w_gt) / (jnp.maximum(w_pred, w_gt) + eps)
  omega_h = jnp.abs(h_gt - h_pred) / (jnp.maximum(h_gt, h_pred) + eps)
  # An integral theta stays an integer power (repeated products, like torch's pow by an int), which is
  # also defined for the negative bases an inverted box produces.
  power = int(theta) if float(theta).is_integer() else float(theta)
  shape = (1 - jnp.exp(-omega_h)) ** power + (1 - jnp.exp(-omega_w)) ** power

  # IoU.
  overlap_w = jnp.maximum(jnp.minimum(px1, tx1) - jnp.maximum(px0, tx0), 0)
  overlap_h = jnp.maximum(jnp.minimum(py1, ty1) - jnp.maximum(py0, ty0), 0)
  overlap = overlap_w * overlap_h
  union = w_pred * h_pred + w_gt * h_gt - overlap
  iou = overlap / union

  return 1 - iou + (shape + distance) / 2, iou


def _vocabulary(config) -> tuple[int, float, int]:
  bins, coord_range = int(config.model.bins), config.model.range
  return bins, coord_range, num_coordinate_classes(bins, coord_range)


def _check_logits(name: str, logits, config, ndim: int) -> jax.Array:
  logits = jnp.asarray(logits, jnp.float32)
  _, _, n = _vocabulary(config)
  if logits.ndim != ndim or logits.shape[-2] != 4 or logits.shape[-1] != n + NUM_SPECIAL_TOKENS:
    lead = "[L, B, 4, V]" if ndim == 4 else "[B, 4, V]"
    raise ValueError(f"{name} has shape {logits.shape}; expected {lead} with V = model.bins * model.range + "
                     f"{NUM_SPECIAL_TOKENS} = {n + NUM_SPECIAL_TOKENS}")
  return logits


def _check_tokens(target_tokens, batch: int) -> jax.Array:
  target_tokens = jnp.asarray(target_tokens)
  if target_tokens.shape != (batch, 4) or not jnp.issubdtype(target_tokens.dtype, jnp.integer):
    raise ValueError(f"target_tokens has shape {target_tokens.shape} and dtype {target_tokens.dtype}; "
                     f"expected [{batch}, 4] integers (the pipeline's `target_tokens`)")
  return target_tokens


def tokens_to_corners(target_tokens, bins: int, coord_range: float) -> jax.Array:
  """The SIoU target of stages 1 and 2: the quantised corners mapped back, `token / (bins - 1) -
  (range / 2 - 0.5)`, float32 `[..., 4]` (not the unquantised box: the actors decode `seq_output`)."""
  tokens = jnp.asarray(target_tokens).astype(jnp.float32)
  return tokens / np.float32(bins - 1) - np.float32(coord_range * 0.5 - 0.5)


def _trajectory_terms(coord_logits, target_tokens, config) -> dict[str, jax.Array]:
  """CE, SIoU, L1 and IoU of one layer's `[B, 4, V]` logits against `[B, 4]` tokens (all means)."""
  bins, coord_range, _ = _vocabulary(config)
  weights = class_weights(bins, coord_range, config.train.special_token_weight)
  ce = weighted_cross_entropy(coord_logits, target_tokens, weights)
  pred = expected_coordinates(coord_logits, bins, coord_range)
  target = tokens_to_corners(target_tokens, bins, coord_range)
  siou, iou = siou_loss(pred, target, config.train.siou_theta)
  return {"ce": ce, "siou": jnp.mean(siou), "l1": jnp.mean(jnp.abs(pred - target)), "iou": jnp.mean(iou)}


def frame_loss(coord_logits, target_tokens, config) -> tuple[jax.Array, Metrics]:
  """Stage 1 (`FARTrackActor.compute_losses`).

  Args:
    coord_logits: `[B, 4, V]` the model's `coord_logits`.
    target_tokens: `[B, 4]` int, the pipeline's `target_tokens` (the actor's `seq_output`: the clamped
      corners quantised with `int((corner + range/2 - 0.5) * (bins - 1))`).
    config: the stage config (reads `model.bins`, `model.range`, `train.*` weights).

  Returns:
    `(loss, metrics)`: loss = `giou_weight * mean SIoU + ce_weight * CE + l1_weight * L1`, where CE is the
    class-weighted cross-entropy of the 4 coordinate tokens against `target_tokens` (mean over B * 4), SIoU
    compares the expectation-decoded corners with `tokens_to_corners(target_tokens)`, and L1 is the mean
    absolute corner error. Metrics `ce`, `siou`, `l1`, `iou` (mean IoU).
  """
  coord_logits = _check_logits("coord_logits", coord_logits, config, 3)
  target_tokens = _check_tokens(target_tokens, coord_logits.shape[0])
  terms = _trajectory_terms(coord_logits, target_tokens, config)
  t = config.train
  loss = t.giou_weight * terms["siou"] + t.ce_weight * terms["ce"] + t.l1_weight * terms["l1"]
  return loss, terms


def inter_layer_kl(lower_logits, upper_logits) -> jax.Array:
  """`compute_inter_layer_kl` for one pair of adjacent layers: KL(upper || lower) over the coordinate
  classes (the 5 special tokens dropped before both softmaxes), temperature 1, the upper layer detached
  (it is the teacher: no gradient reaches it through this term), `F.kl_div(..., reduction='batchmean')`,
  i.e. summed over the 4 tokens and the classes and divided by B only.

  Args:
    lower_logits, upper_logits: `[B, 4, V]`.

  Returns:
    Scalar `sum p_up * (log p_up - log p_low) / B`; `p log p` is 0 where `p` underflows to 0 (torch's xlogy).
  """
  lower_logits = jnp.asarray(lower_logits, jnp.float32)[..., :-NUM_SPECIAL_TOKENS]
  upper_logits = jax.lax.stop_gradient(jnp.asarray(upper_logits, jnp.float32)[..., :-NUM_SPECIAL_TOKENS])
  teacher = jax.nn.softmax(upper_logits, axis=-1)
  student_log = jax.nn.log_softmax(lower_logits, axis=-1)
  pointwise = jax.scipy.special.xlogy(teacher, teacher) - teacher * student_log
  return jnp.sum(pointwise) / lower_logits.shape[0]


def distill_loss(layer_logits, target_tokens, config) -> tuple[jax.Array, Metrics]:
  """Stage 2 (`FARTrackDistillActor.compute_losses`).

  Args:
    layer_logits: `[L, B, 4, V]` the model's `layer_logits`, shallow to deep, the last being the final
      layer's `coord_logits` (L >= 2).
    target_tokens: `[B, 4]` int, as in `frame_loss`.
    config: the stage config.

  Returns:
    `(loss, metrics)`: loss = `giou_weight * mean_l SIoU_l + ce_weight * mean_l CE_l + kl_weight * mean_i
    KL(layer i+1 || layer i) + l1_weight * L1_final`. Every layer gets the stage-1 trajectory loss (CE +
    SIoU against the same tokens); the L - 1 KL terms are `inter_layer_kl` of adjacent layers, the deeper
    one detached. Metrics: `ce`, `siou`, `kl` (means over layers / pairs), `l1` and `iou` of the final layer
    (the original logs the last layer's), and per layer `ce_layer_{l}`, `siou_layer_{l}`, `kl_layer_{i}`.
  """
  layer_logits = _check_logits("layer_logits", layer_logits, config, 4)
  num_layers = layer_logits.shape[0]
  if num_layers < 2:
    raise ValueError(f"layer_logits has {num_layers} layer; distillation needs model.logit_layers to name at "
                     "least one layer besides the final one")
  target_tokens = _check_tokens(target_tokens, layer_logits.shape[1])
  terms = jax.vmap(lambda logits: _trajectory_terms(logits, target_tokens, config))(layer_logits)
  kl = jax.vmap(inter_layer_kl)(layer_logits[:-1], layer_logits[1:])
  t = config.train
  metrics = {"ce": jnp.mean(terms["ce"]), "siou": jnp.mean(terms["siou"]), "kl": jnp.mean(kl),
             "l1": terms["l1"][-1], "iou": terms["iou"][-1]}
  loss = (t.giou_weight * metrics["siou"] + t.ce_weight * metrics["ce"] + t.kl_weight * metrics["kl"]
          + t.l1_weight * metrics["l1"])
  for layer in range(num_layers):
    metrics[f"ce_layer_{layer}"] = terms["ce"][layer]
    metrics[f"siou_layer_{layer}"] = terms["siou"][layer]
  for pair in range(num_layers - 1):
    metrics[f"kl_layer_{pair}"] = kl[pair]
  return loss, metrics


def sequence_targets(search_boxes_px, config) -> tuple[jax.Array, jax.Array]:
  """The sparse stage's targets from boxes in search-crop pixels (`compute_sequence_losses`).

  Corners (x, y, x + w, y + h) / `data.search.size`, shifted and scaled to token units
  `(c + range/2 - 0.5) * (bins - 1)`, clamped to [0, bins * range - 1e-4]. Note the clamp's upper end is in
  units of `bins * range` classes while the scale is `bins - 1`: a corner far past the crop becomes
  `(bins * range - 1e-4) / (bins - 1) - (range/2 - 0.5)` (1.5067 for bins 300), beyond the grid's last value.

  Args:
    search_boxes_px: `[N, 4]` (x, y, w, h) in search-crop pixels.

  Returns:
    `(corners [N, 4] float32 for SIoU/L1, tokens [N, 4] int32 for CE: the clamped values truncated)`.
  """
  boxes = jnp.asarray(search_boxes_px, jnp.float32)
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"search_boxes_px has shape {boxes.shape}; expected [N, 4] (x, y, w, h) in crop pixels")
  bins, coord_range, n = _vocabulary(config)
  size = np.float32(config.data.search.size)
  offset = np.float32(coord_range * 0.5 - 0.5)
  corners = jnp.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=-1)
  scaled = (corners / size + offset) * np.float32(bins - 1)
  scaled = jnp.clip(scaled, 0.0, np.float32(n - _SEQUENCE_TARGET_MARGIN))
  return scaled / np.float32(bins - 1) - offset, scaled.astype(jnp.int32)


def sequence_loss(coord_logits, search_boxes_px, config) -> tuple[jax.Array, Metrics]:
  """Stage 3, the learn step of one clip (`FARTrackSparseActor.compute_sequence_losses`).

  Args:
    coord_logits: `[N, 4, V]` logits of the clip's N recorded frames.
    search_boxes_px: `[N, 4]` (x, y, w, h) ground truth in search-crop pixels (the explore step's
      `search_anno`).
    config: the stage config (also reads `data.search.size`).

  Returns:
    `(loss, metrics)`: loss = `giou_weight * mean SIoU + l1_weight * L1 + ce_weight * CE` with the targets of
    `sequence_targets` (ce_weight and l1_weight are 0 in the sparse config, so SIoU only; CE is still
    reported). Means are over the clip's frames; the original backpropagates one clip at a time and steps
    once, so a batch of clips sums this over clips. Metrics `ce`, `siou`, `l1`, `iou`.
  """
  coord_logits = _check_logits("coord_logits", coord_logits, config, 3)
  corners, tokens = sequence_targets(search_boxes_px, config)
  if corners.shape[0] != coord_logits.shape[0]:
    raise ValueError(f"search_boxes_px has {corners.shape[0]} frames but coord_logits has "
                     f"{coord_logits.shape[0]}")
  bins, coord_range, _ = _vocabulary(config)
  t = config.train
  ce = weighted_cross_entropy(coord_logits, tokens, class_weights(bins, coord_range, t.special_token_weight))
  pred = expected_coordinates(coord_logits, bins, coord_range)
  siou, iou = siou_loss(pred, corners, t.siou_theta)
  metrics = {"ce": ce, "siou": jnp.mean(siou), "l1": jnp.mean(jnp.abs(pred - corners)), "iou": jnp.mean(iou)}
  loss = t.giou_weight * metrics["siou"] + t.l1_weight * metrics["l1"] + t.ce_weight * metrics["ce"]
  return loss, metrics


__all__ = ["NUM_SPECIAL_TOKENS", "class_weights", "coordinate_grid", "distill_loss", "expected_coordinates",
           "frame_loss", "inter_layer_kl", "num_coordinate_classes", "sequence_loss", "sequence_targets",
           "siou_loss", "tokens_to_corners", "weighted_cross_entropy"]
