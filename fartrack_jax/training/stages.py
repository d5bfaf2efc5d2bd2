"""What each stage computes from a batch: `loss_fn(params, batch, rng) -> (loss, metrics)`.

`rng` is the step's key (drop-path on, as the original's `net.train()`), or None for evaluation
(drop-path off). The frame-level stages read the grain frame pipeline's batches
(`data_pipelines/training/pipeline.py`): `templates` [B, T, Hz, Wz, 3], `search` [B, Hx, Wx, 3] normalised
float32, `target_tokens` [B, 4] int32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fartrack_jax import model as model_lib
from fartrack_jax.training import losses

FRAME_STAGES = ("fartrack", "fartrack_distill")


def _apply(model, params, batch, rng):
  kwargs = {"deterministic": True} if rng is None else {"deterministic": False, "rngs": {"dropout": rng}}
  return model.apply({"params": params}, batch["templates"], batch["search"], **kwargs)


def frame_loss_fn(config, model: model_lib.FARTrack | None = None):
  """Stage 1 (`frame_loss`: CE + SIoU of the final layer) or stage 2 (`distill_loss`: the trajectory loss
  of every emitting layer plus the inter-layer KL)."""
  if config.stage not in FRAME_STAGES:
    raise ValueError(f"frame_loss_fn serves {FRAME_STAGES}; config.stage={config.stage!r}")
  model = model or model_lib.build_model(config)
  distill = config.stage == "fartrack_distill"

  def loss_fn(params, batch, rng):
    out = _apply(model, params, batch, rng)
    if distill:
      loss, metrics = losses.distill_loss(out["layer_logits"], batch["target_tokens"], config)
    else:
      loss, metrics = losses.frame_loss(out["coord_logits"], batch["target_tokens"], config)
    return loss, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  return loss_fn


def batch_spec(config, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of one frame-level batch (what `loss_fn` reads), for compiling without data."""
  d = config.data
  return {"templates": jax.ShapeDtypeStruct((batch_size, d.template.number, d.template.size, d.template.size, 3),
                                            jnp.float32),
          "search": jax.ShapeDtypeStruct((batch_size, d.search.size, d.search.size, 3), jnp.float32),
          "search_box": jax.ShapeDtypeStruct((batch_size, 4), jnp.float32),
          "target_tokens": jax.ShapeDtypeStruct((batch_size, 4), jnp.int32)}
