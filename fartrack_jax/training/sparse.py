"""Stage 3, inter-frame autoregressive sparsification: one clip batch -> explore -> sequence loss.

The original (`lib/train/trainers/ltr_seq_trainer_sparse.py` with `FARTrackSparseActor`) trains on clips of
S search frames plus T template frames per sequence, in two passes per optimizer step:

  explore (no gradient, `net.eval()`): `batch_init` crops the T templates around their ground-truth boxes
    (template factor, `get_subwindow`) and starts the track at search frame 0's ground-truth box; then for
    frames 1..S-1 in order, `batch_track` crops the search region around the previous prediction (search
    factor), runs the network with the current template-token mask, decodes the argmax bins into the next
    box (`_bbox_clip`), and takes the network's new mask. The mask starts all-visible; the network replaces
    an all-visible mask by its attention-ranked keep mask (pruning `model.train_prune_ratio` of every
    template but the last) and passes any other mask through, so frame 1 runs unpruned and frames 2..S-1
    run with the mask frame 1 produced. Each frame records its crop, the ground truth in crop pixels
    (`gt_in_crop`) and the mask it ran with.
  loss (with gradient, `net.train()`: drop-path on): every recorded frame is run again, with its mask,
    and `compute_sequence_losses` scores the coordinates (SIoU; the cross-entropy weight is 0). The trainer
    backpropagates each sequence's mean loss separately before one step, so the batch loss is the SUM of
    the per-sequence means; gradients are clipped at `train.seq_grad_clip_norm` (100).

Here both passes are one jitted function of `(params, clip batch)`: the explore is a `jax.lax.scan` over
frames (the recurrence: centre, size and mask carried from frame to frame) with the crops made on device
(`device_crop`), vectorised over the batch; the loss pass maps over frames with `jax.checkpoint`, so the
backward pass keeps one frame-batch of activations at a time (memory grows with the clip length only by the
crops and logits). The model ignores the previous-box tokens the original computes (`pre_seq`): its sparse
forward replaces the trajectory by the fixed command tokens, so they are not computed.

Clip batches come from `data_pipelines/training/clips.py`: `template_frames` [B, T, C, C, 3] and
`search_frames` [B, S, C, C, 3] uint8 canvases, `*_boxes` [B, *, 4] (x, y, w, h canvas pixels), `*_sizes`
[B, *, 2] (real h, w).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fartrack_jax import model as model_lib
from fartrack_jax.training import device_crop, losses


def _normalize(crops_0_255, mean, std):
  """The original's `x.float().mul(1 / 255).clamp(0, 1)` then `Normalize(mean, std)`."""
  unit = jnp.clip(crops_0_255 * jnp.float32(1.0 / 255.0), 0.0, 1.0)
  return (unit - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def box_iou(box_a_xywh, box_b_xywh):
  """IoU of (x, y, w, h) boxes, [..., 4] -> [...] (0 when the union is empty)."""
  a0, a1 = box_a_xywh[..., :2], box_a_xywh[..., :2] + box_a_xywh[..., 2:]
  b0, b1 = box_b_xywh[..., :2], box_b_xywh[..., :2] + box_b_xywh[..., 2:]
  inter = jnp.prod(jnp.clip(jnp.minimum(a1, b1) - jnp.maximum(a0, b0), 0.0), axis=-1)
  union = jnp.prod(box_a_xywh[..., 2:], axis=-1) + jnp.prod(box_b_xywh[..., 2:], axis=-1) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def template_crops(config, batch):
  """`batch_init`: [B, T, Hz, Wz, 3] normalised template crops around the ground-truth template boxes."""
  d = config.data
  boxes = batch["template_boxes"].astype(jnp.float32)
  centers = boxes[..., :2] + 0.5 * boxes[..., 2:]
  sides = device_crop.context_side(boxes[..., 2:], d.template.factor)
  crop = lambda frame, size, center, side: device_crop.get_subwindow(frame, size, center, side, d.template.size)
  crops = jax.vmap(jax.vmap(crop))(batch["template_frames"], batch["template_sizes"], centers, sides)
  return _normalize(crops, d.mean, d.std)


def explore(model, params, config, batch):
  """The no-gradient tracking pass over a clip batch (see the module docstring).

  Returns a dict of per-frame records for frames 1..S-1, frame-major:
    templates [B, T, Hz, Wz, 3], search [S-1, B, Hx, Wx, 3] normalised crops, gt_in_crop [S-1, B, 4]
    (x, y, w, h crop pixels), token_mask [S-1, B, N] (the mask each frame ran with), iou [S-1, B] of the
    tracked box against the ground truth.
  """
  d, m = config.data, config.model
  spec = model.spec
  params = jax.lax.stop_gradient(params)
  templates = template_crops(config, batch)
  first = batch["search_boxes"][:, 0].astype(jnp.float32)
  center0, size0 = first[:, :2] + 0.5 * first[:, 2:], first[:, 2:]
  mask0 = jnp.ones((first.shape[0], spec.num_tokens), bool)
  frames = jnp.moveaxis(batch["search_frames"][:, 1:], 1, 0)
  boxes = jnp.moveaxis(batch["search_boxes"][:, 1:].astype(jnp.float32), 1, 0)
  sizes = jnp.moveaxis(batch["search_sizes"][:, 1:], 1, 0)

  def crop_one(frame, size_hw, center, side):
    return device_crop.get_subwindow(frame, size_hw, center, side, d.search.size)

  def track(carry, xs):
    center, size, mask = carry
    frame, gt_box, size_hw = xs
    side = device_crop.context_side(size, d.search.factor)
    search = _normalize(jax.vmap(crop_one)(frame, size_hw, center, side), d.mean, d.std)
    gt_in_crop = jax.vmap(device_crop.crop_box_to_search, in_axes=(0, 0, 0, None))(gt_box, center, side,
                                                                                  d.search.size)
    out = model.apply({"params": params}, templates, search, token_mask=mask, prune_mode="train",
                      deterministic=True)
    pred_bins = jnp.argmax(out["coord_logits"], axis=-1).astype(jnp.float32)
    new_center, new_size = jax.vmap(
        lambda p, c, s, hw: device_crop.search_bins_to_image(p, c, s, hw, bins=m.bins, coord_range=m.range))(
            pred_bins, center, side, size_hw)
    iou = box_iou(device_crop.center_size_to_xywh(new_center, new_size), gt_box)
    record = {"search": search, "gt_in_crop": gt_in_crop, "token_mask": mask, "iou": iou}
    return (new_center, new_size, out["keep_masks"]), record

  _, records = jax.lax.scan(track, (center0, size0, mask0), (frames, boxes, sizes))
  records = jax.lax.stop_gradient(records)
  records["templates"] = jax.lax.stop_gradient(templates)
  return records


def sequence_loss_fn(config, model: model_lib.FARTrack | None = None, remat: bool = True):
  """`loss_fn(params, clip_batch, rng) -> (loss, metrics)` of the sparse stage (see the module docstring).

  `rng` None evaluates with drop-path off. `remat` recomputes each frame's forward in the backward pass
  instead of storing its activations (memory ~ one frame batch instead of S - 1).
  """
  if config.stage != "fartrack_sparse":
    raise ValueError(f"sequence_loss_fn serves fartrack_sparse; config.stage={config.stage!r}")
  model = model or model_lib.build_model(config)

  def loss_fn(params, batch, rng):
    records = explore(model, params, config, batch)
    num_frames = records["search"].shape[0]
    templates = records["templates"]

    def frame_logits(args):
      search, mask, frame_rng = args
      kwargs = ({"deterministic": True} if rng is None
                else {"deterministic": False, "rngs": {"dropout": frame_rng}})
      return model.apply({"params": params}, templates, search, token_mask=mask, prune_mode="train",
                         **kwargs)["coord_logits"]

    body = jax.checkpoint(frame_logits) if remat else frame_logits
    frame_rngs = jax.random.split(rng if rng is not None else jax.random.PRNGKey(0), num_frames)
    logits = jax.lax.map(body, (records["search"], records["token_mask"], frame_rngs))  # [S-1, B, 4, V]

    def one_sequence(seq_logits, seq_boxes):
      return losses.sequence_loss(seq_logits, seq_boxes, config)

    per_sequence, metrics = jax.vmap(one_sequence, in_axes=(1, 1))(logits, records["gt_in_crop"])
    metrics = {k: jnp.mean(v) for k, v in metrics.items()}
    metrics["explore_iou"] = jnp.mean(records["iou"])
    return jnp.sum(per_sequence), metrics

  return loss_fn


def clip_batch_spec(config, batch_size: int, clip_length: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of one clip batch (what `loss_fn` reads), for compiling without data; `clip_length` overrides
  `data.search.number`."""
  d = config.data
  t, s, c = int(d.template.number), int(clip_length or d.search.number), int(d.clip_canvas)
  u8, f32, i32 = jnp.uint8, jnp.float32, jnp.int32
  return {"template_frames": jax.ShapeDtypeStruct((batch_size, t, c, c, 3), u8),
          "template_boxes": jax.ShapeDtypeStruct((batch_size, t, 4), f32),
          "template_sizes": jax.ShapeDtypeStruct((batch_size, t, 2), i32),
          "search_frames": jax.ShapeDtypeStruct((batch_size, s, c, c, 3), u8),
          "search_boxes": jax.ShapeDtypeStruct((batch_size, s, 4), f32),
          "search_sizes": jax.ShapeDtypeStruct((batch_size, s, 2), i32)}
