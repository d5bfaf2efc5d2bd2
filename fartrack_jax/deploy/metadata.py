"""What an exported network carries for the tracker: crop sizes and factors, bins, prune ratios,
normalisation, template count. Plain Python (no JAX), read by the runtime tracker.

Stored as one JSON string under the key `fartrack` in the ONNX file's `metadata_props`, and as the
`<file>.json` beside a StableHLO export.
"""

from __future__ import annotations

import json

KEY = "fartrack"
FORMAT = "fartrack-tracker/1"
STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")

# Every field the runtime reads; `check` refuses metadata without one of them.
REQUIRED = ("format", "stage", "depth", "num_templates", "template_size", "search_size", "template_factor",
            "search_factor", "bins", "range", "vocab_size", "tokens_per_template", "num_search_tokens",
            "num_tokens", "track_prune_ratios", "mean", "std", "margin", "sampling_base", "inputs", "outputs")


class DeployError(ValueError):
  """An exported file the runtime cannot use, named with the reason (one line)."""


def from_config(config, dtype: str = "float32", batch: int | None = None) -> dict:
  """The tracker's view of `config` (an ml_collections config of any stage)."""
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import tracker as trk  # pylint: disable=g-import-not-at-top
  spec = model_lib.ModelSpec.from_config(config)
  tc = trk.TrackerConfig.from_config(config, capacity=1)
  sparse = config.stage == "fartrack_sparse"
  return {
      "format": FORMAT, "stage": config.stage, "variant": config.get("variant"), "depth": spec.depth,
      "dtype": dtype, "batch": batch,  # batch None: any
      "num_templates": spec.num_templates, "template_size": tc.template_size, "search_size": tc.search_size,
      "template_factor": tc.template_factor, "search_factor": tc.search_factor,
      "bins": spec.bins, "range": spec.range, "vocab_size": spec.vocab_size,
      "tokens_per_template": spec.tokens_per_template, "num_search_tokens": spec.num_search_tokens,
      "num_tokens": spec.num_tokens, "track_prune_ratios": list(spec.track_prune_ratios),
      "mean": list(tc.mean), "std": list(tc.std), "margin": tc.margin, "sampling_base": tc.sampling_base,
      "inputs": ["templates", "search"] + (["token_mask"] if sparse else []),
      "outputs": ["coord_logits"] + (["keep_masks"] if sparse else []),
  }


def check(meta, source: str, stage: str | None = None) -> dict:
  """`meta` (a dict or its JSON) if it is complete tracker metadata, else `DeployError` naming `source`.
  With `stage`, metadata of another stage is refused too."""
  if meta is None:
    raise DeployError(f"{source} has no '{KEY}' metadata: it was not written by scripts/export_model.py")
  if isinstance(meta, (str, bytes)):
    try:
      meta = json.loads(meta)
    except ValueError:
      raise DeployError(f"{source}: its '{KEY}' metadata is not JSON") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    raise DeployError(f"{source}: metadata format {got!r}, expected {FORMAT!r}")
  missing = [k for k in REQUIRED if k not in meta]
  if missing:
    raise DeployError(f"{source}: tracker metadata lacks {', '.join(missing)}")
  if meta["stage"] not in STAGES:
    raise DeployError(f"{source}: unknown stage {meta['stage']!r} in its metadata")
  if stage is not None and meta["stage"] != stage:
    raise DeployError(f"{source} is an export of stage {meta['stage']!r}, not {stage!r}")
  return meta
