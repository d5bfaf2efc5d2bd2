"""FARTrack's one-stream ViT tracker as Flax (linen) modules: one encoder for every stage and depth.

The token sequence is `[template tokens (T * P_z) | search tokens (P_x) | 4 command tokens]`; with the
Tiny config that is 5 * 49 + 196 + 4 = 445 tokens. The four command tokens (x0, y0, x1, y1) attend to
everything and their final-normed features, multiplied by the transposed word-embedding matrix plus a bias,
are the coordinate logits over `bins * range` coordinate bins and 5 special tokens.

What each stage changes, all by config:
  - fartrack (frame-level): plain pre-norm blocks.
  - fartrack_distill: the same forward, plus coordinate logits after every layer in `model.logit_layers`.
  - fartrack_sparse: a token keep-mask on the attention keys, masked LayerNorm in the blocks, max-norm on
    the command-token embeddings, and the attention-driven template-token ranking that yields keep masks.

Parameters mirror the original state dict one to one (including the few the forward never reads, such as
`cls_token` or `pos_embed_z1`) so a converted checkpoint converts back to a state dict the original loads
strictly. See `fartrack_jax/convert.py` for the key map.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The original's weight initialisers: trunc_normal(std=.02) for Linear layers and embeddings tables,
# LayerNorm (1, 0). Only the distributions of a fresh model depend on these; converted checkpoints overwrite
# them.
_TRUNC02 = nn.initializers.truncated_normal(stddev=0.02)


def _kaiming_normal_rows(key, shape, dtype=jnp.float32):
  """`variance_scaling(2.0, "fan_in", "normal")` over the last axis (torch's kaiming_normal_ of a table),
  with the same values whether init runs eagerly or compiled: the standard normal draw is kept apart from the
  scaling, which XLA would otherwise fold into the draw's own constant factor (one rounding instead of two:
  1 ulp apart in half the entries, enough for a long from-scratch run to end elsewhere)."""
  std = np.sqrt(np.asarray(2.0 / shape[-1], dtype), dtype=dtype)
  return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype)) * std


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Static description of the network, derived from a config (see `ModelSpec.from_config`)."""
  stage: str = "fartrack"
  embed_dim: int = 192
  num_heads: int = 3
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  patch_size: int = 16
  num_blocks: int = 12
  extension: int = 3
  depth: int = 15
  bins: int = 300
  range: int = 2
  prenum: int = 0
  norm_eps: float = 1e-6
  masked_norm: bool = False
  masked_norm_eps: float = 1e-5
  word_max_norm: float = 0.0
  logit_layers: tuple[int, ...] = ()
  train_prune_ratio: float = 0.25
  track_prune_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
  pretrain_grid: int = 14
  num_templates: int = 5
  template_size: int = 112
  search_size: int = 224
  drop_path_rate: float = 0.0

  @classmethod
  def from_config(cls, config) -> "ModelSpec":
    m = config.model
    return cls(
        stage=config.stage, embed_dim=m.embed_dim, num_heads=m.num_heads, mlp_ratio=float(m.mlp_ratio),
        qkv_bias=m.qkv_bias, patch_size=m.patch_size, num_blocks=m.num_blocks, extension=m.extension,
        depth=m.depth, bins=m.bins, range=m.range, prenum=m.prenum, norm_eps=m.norm_eps,
        masked_norm=m.masked_norm, masked_norm_eps=m.masked_norm_eps, word_max_norm=float(m.word_max_norm),
        logit_layers=tuple(int(i) for i in m.logit_layers), train_prune_ratio=float(m.train_prune_ratio),
        track_prune_ratios=tuple(float(r) for r in m.track_prune_ratios), pretrain_grid=m.pretrain_grid,
        num_templates=config.data.template.number, template_size=config.data.template.size,
        search_size=config.data.search.size, drop_path_rate=float(config.train.drop_path_rate))

  # Derived sizes. The original hard-codes several of them (49, 14x14, 200, 445); here they follow the config.
  @property
  def vocab_size(self) -> int:
    """Coordinate bins plus 4 command tokens and the padding token."""
    return self.bins * self.range + 5

  @property
  def num_coord_bins(self) -> int:
    return self.bins * self.range

  @property
  def command_tokens(self) -> tuple[int, int, int, int]:
    first = self.bins * self.range
    return (first, first + 1, first + 2, first + 3)

  @property
  def template_grid(self) -> int:
    return self.template_size // self.patch_size

  @property
  def search_grid(self) -> int:
    return self.search_size // self.patch_size

  @property
  def tokens_per_template(self) -> int:
    return self.template_grid ** 2

  @property
  def num_template_tokens(self) -> int:
    return self.num_templates * self.tokens_per_template

  @property
  def num_search_tokens(self) -> int:
    return self.search_grid ** 2

  @property
  def num_tokens(self) -> int:
    return self.num_template_tokens + self.num_search_tokens + 4

  @property
  def center_search_token(self) -> int:
    """Index in the full sequence of the search token at the centre of the search grid."""
    c = self.search_grid // 2
    return self.num_template_tokens + c * self.search_grid + c

  def layer_names(self) -> list[str]:
    return [f"layer_{i}" for i in range(self.depth)]

  def drop_path_rates(self) -> list[float]:
    # The original builds linspace(0, rate, num_blocks) and gives extension block j the rate of block j.
    dpr = np.linspace(0.0, self.drop_path_rate, self.num_blocks).tolist()
    return [dpr[i] if i < self.num_blocks else dpr[i - self.num_blocks] for i in range(self.depth)]


def masked_layer_norm(x, token_mask, scale, bias, eps):
  """The original `MaskedLayerNorm`: statistics over the hidden size of `x * mask`.

  Args:
    x: `[B, N, D]`.
    token_mask: `[B, N]` bool, True for visible tokens.
  Returns `[B, N, D]`: LayerNorm(x) for visible tokens and `bias` for masked ones (their normalised value is
  0/sqrt(eps) = 0). Both sums run over the full hidden size D, as the original's do.
  """
  # For a visible token (mask 1) the original's statistics are the plain LayerNorm's; for a masked one
  # x * 0 = 0 gives mean 0, variance 0 and output `bias`. Selecting per token computes the same values
  # without multiplying every element by the mask twice.
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  normed = centred * jax.lax.rsqrt(var + eps) * scale + bias
  return jnp.where(token_mask[..., None], normed, bias)


class MaskedLayerNorm(nn.Module):
  """Holds `scale`/`bias` like `nn.LayerNorm`; see `masked_layer_norm`."""
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, token_mask):
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
    # Statistics in float32 even under bfloat16 compute.
    y = masked_layer_norm(x.astype(jnp.float32), token_mask, scale, bias, self.epsilon)
    return y.astype(self.dtype)


class DropPath(nn.Module):
  """Stochastic depth per sample (timm's DropPath): zero a sample's branch, rescale the survivors."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class PatchEmbed(nn.Module):
  """Non-overlapping patch projection (the original's stride-p Conv2d), as patchify + one matmul, which
  XLA:CPU runs faster than the strided convolution. Kernel layout `[p, p, 3, D]` as `nn.Conv`'s.

  `[B, H, W, 3]` -> `[B, H/p, W/p, D]`.
  """
  features: int
  patch_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    p = self.patch_size
    b, h, w, c = images.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, h // p, w // p, p * p * c).astype(self.dtype)
    return patches @ kernel.reshape(p * p * c, self.features).astype(self.dtype) + bias.astype(self.dtype)


class Attention(nn.Module):
  """Multi-head self-attention returning the attention probabilities too.

  `key_bias` is additive (`0` or `-inf`), `[B, 1, 1, N]` for a key mask or `[B, 1, N, N]` for a full one.
  With `query_rows`, only those tokens are queries (keys and values stay all N): the last layer needs
  nothing but the command tokens and the centre search token's attention. With `rank_token`, the second
  output is only that token's attention row `[B, H, N]` instead of `[B, H, N or len(query_rows), N]`.
  """
  num_heads: int
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_bias=None, query_rows=None, rank_token=None):
    b, n, d = x.shape
    head_dim = d // self.num_heads
    qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, dtype=self.dtype, kernel_init=_TRUNC02, name="qkv")(x)
    # Heads-major [3, B, H, N, hd] once: batched matmuls in this layout run about twice as fast on XLA:CPU
    # as einsums over [B, N, H, hd].
    q, k, v = qkv.reshape(b, n, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    rank_probs = None
    if rank_token is not None:
      # The one attention row the template ranking reads, computed on its own: slicing it out of the full
      # probabilities makes XLA:CPU materialise them every layer (~15 % of the Tiny forward).
      row_bias = None
      if key_bias is not None:
        row_bias = key_bias if key_bias.shape[2] == 1 else key_bias[:, :, rank_token:rank_token + 1]
      row_logits = ((q[:, :, rank_token:rank_token + 1] * np.float32(head_dim ** -0.5))
                    @ k.swapaxes(-1, -2)).astype(jnp.float32)
      if row_bias is not None:
        row_logits = row_logits + row_bias
      rank_probs = jax.nn.softmax(row_logits, axis=-1)[:, :, 0]
    if query_rows is not None:
      rows = jnp.asarray(query_rows)
      q = q[:, :, rows]
      if key_bias is not None and key_bias.shape[2] != 1:
        key_bias = key_bias[:, :, rows]
    # Scaling q (N x hd values) instead of the scores (N x N) is the same product up to rounding.
    logits = ((q * np.float32(head_dim ** -0.5)) @ k.swapaxes(-1, -2)).astype(jnp.float32)
    if key_bias is not None:
      logits = logits + key_bias
    probs = jax.nn.softmax(logits, axis=-1)
    out = (probs.astype(self.dtype) @ v).transpose(0, 2, 1, 3).reshape(b, q.shape[2], d)
    out = nn.Dense(d, dtype=self.dtype, kernel_init=_TRUNC02, name="proj")(out)
    return out, (probs if rank_token is None else rank_probs)


class Mlp(nn.Module):
  hidden_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=_TRUNC02, name="fc1")(x)
    # torch.nn.GELU defaults to the exact erf form.
    x = 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(2 ** -0.5)))
    return nn.Dense(d, dtype=self.dtype, kernel_init=_TRUNC02, name="fc2")(x)


class Block(nn.Module):
  """Pre-norm transformer block. With `masked_norm` it normalises with the masked LayerNorm (the sparse
  stage); it still owns `norm1`/`norm2`, which the sparse forward never reads but its checkpoints carry."""
  num_heads: int
  mlp_ratio: float
  qkv_bias: bool
  norm_eps: float
  masked_norm: bool
  masked_norm_eps: float
  drop_path_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, token_mask, key_bias, deterministic: bool, query_rows=None, rank_token=None):
    """`x`: `[B, N, D]`. Returns the updated tokens (`[B, len(query_rows), D]` with `query_rows`) and the
    attention probabilities `[B, H, N or len(query_rows), N]` (with `rank_token`: that token's row,
    `[B, H, N]`)."""
    d = x.shape[-1]
    norm1 = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name="norm1")
    norm2 = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name="norm2")
    rows = None if query_rows is None else jnp.asarray(query_rows)
    if self.masked_norm:
      mnorm1 = MaskedLayerNorm(self.masked_norm_eps, dtype=self.dtype, name="masknorm1")
      mnorm2 = MaskedLayerNorm(self.masked_norm_eps, dtype=self.dtype, name="masknorm2")
      if self.is_initializing():  # Create norm1/norm2 params for the round trip; the forward skips them.
        norm1(x), norm2(x)
      pre_attn = lambda h: mnorm1(h, token_mask)
      mlp_mask = token_mask if rows is None else token_mask[:, rows]
      pre_mlp = lambda h: mnorm2(h, mlp_mask)
    else:
      pre_attn, pre_mlp = norm1, norm2
    drop_path = DropPath(self.drop_path_rate)
    attn_out, probs = Attention(self.num_heads, self.qkv_bias, dtype=self.dtype, name="attn")(
        pre_attn(x), key_bias, query_rows, rank_token)
    if rows is not None:
      x = x[:, rows]
    x = x + drop_path(attn_out, deterministic)
    mlp_out = Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp")(pre_mlp(x))
    x = x + drop_path(mlp_out, deterministic)
    return x, probs


def keep_lowest_pruned(scores, prune_num: int):
  """Bool mask over the last axis: False for the `prune_num` lowest scores, True elsewhere.

  The original sorts ascending (`argsort`) and zeroes the first `prune_num` indices.
  """
  order = jnp.argsort(scores, axis=-1)
  ranks = jnp.argsort(order, axis=-1)
  return ranks >= prune_num


def train_keep_mask(template_attention, spec: ModelSpec):
  """The sparse stage's training-time template pruning (`mask_generation(..., inference=False)`).

  Args:
    template_attention: `[B, T * P_z]`, attention of the centre search token to every template token.
  Returns a `[B, N]` token keep mask: the lowest `train_prune_ratio` of each template's tokens are pruned,
  except in the last (newest) template, which the original leaves whole; search and command tokens are kept.
  """
  b = template_attention.shape[0]
  per_template = template_attention.reshape(b, spec.num_templates, spec.tokens_per_template)
  prune_num = int(spec.tokens_per_template * spec.train_prune_ratio)
  keep = keep_lowest_pruned(per_template, prune_num)
  keep = keep.at[:, -1].set(True)
  rest = jnp.ones((b, spec.num_search_tokens + 4), dtype=bool)
  return jnp.concatenate([keep.reshape(b, -1), rest], axis=-1)


def track_keep_masks(template_attention, spec: ModelSpec):
  """The sparse stage's tracking-time masks (`mask_generation(..., inference=True)`).

  Args:
    template_attention: `[B, T * P_z]`.
  Returns `[B, len(track_prune_ratios), P_z]` bool: keep masks for the newest template slot (the last
  `P_z` template tokens), pruning 25/50/75/90 % of its tokens by ascending attention.
  """
  newest = template_attention[:, -spec.tokens_per_template:]
  masks = [keep_lowest_pruned(newest, int(spec.tokens_per_template * r)) for r in spec.track_prune_ratios]
  return jnp.stack(masks, axis=1)


class FARTrack(nn.Module):
  """The FARTrack network for any stage and depth.

  Call with:
    templates: `[B, T, H_z, W_z, 3]` normalised template crops (T = `spec.num_templates`).
    search: `[B, H_x, W_x, 3]` normalised search crop.
    token_mask: sparse stage only. `[B, N]` bool key mask (True = visible), or the original's `[B, N, N]`
      attention mask (its row 0 then serves as the token mask of the masked LayerNorm, as in the original).
      None means all visible.
    prune_mode: sparse stage only. "track" returns the four tracking keep masks of the newest template;
      "train" returns the training keep mask: generated from attention when `token_mask` is visible
      everywhere in the whole batch, otherwise `token_mask` itself (the original tests `torch.all(mask)` over
      the batch, not per sample).
    deterministic: False enables drop-path (needs a "dropout" rng).

  Returns a dict:
    coord_logits: `[B, 4, V]` logits of the 4 command tokens (V = bins * range + 5).
    layer_logits: `[L, B, 4, V]` for `spec.logit_layers`, present when that tuple is non-empty.
    keep_masks: sparse only; `[B, 4, P_z]` ("track") or `[B, N]` ("train").
    template_attention: sparse only; `[B, T * P_z]`, head-averaged attention of the centre search token to
      the template tokens, summed over layers (the ranking the keep masks come from).
  """
  spec: ModelSpec
  dtype: Any = jnp.float32

  def setup(self):
    s = self.spec
    d = s.embed_dim
    f32 = jnp.float32
    self.identity = self.param("identity", _TRUNC02, (1, s.num_templates + 1, d), f32)
    self.patch_embed = PatchEmbed(d, s.patch_size, dtype=self.dtype, name="patch_embed")
    # MAE's positional embedding and class token: read only when initialising from MAE weights (the
    # converter resizes pos_embed into the template/search grids); kept for the round trip.
    self.cls_token = self.param("cls_token", _TRUNC02, (1, 1, d), f32)
    self.pos_embed = self.param("pos_embed", _TRUNC02, (1, s.pretrain_grid ** 2 + 1, d), f32)
    self.template_pos_embed = self.param("pos_embed_z0", _TRUNC02, (1, s.tokens_per_template, d), f32)
    self.unused_template_pos_embed = self.param("pos_embed_z1", _TRUNC02, (1, s.tokens_per_template, d), f32)
    if s.stage == "fartrack_sparse":
      self.sparse_template_pos_embed = self.param("pos_embed_z", _TRUNC02, (1, s.tokens_per_template, d), f32)
    self.search_pos_embed = self.param("pos_embed_x", _TRUNC02, (1, s.num_search_tokens, d), f32)
    # Stage 1 initialises the table with kaiming_normal_ (std sqrt(2/D)); the embeddings below keep
    # nn.Embedding's N(0, 1).
    self.word_embeddings = self.param(
        "word_embeddings", _kaiming_normal_rows, (s.vocab_size, d), f32)
    self.position_embeddings = self.param("position_embeddings", nn.initializers.normal(1.0), (4, d), f32)
    if s.prenum > 0:
      # The sparse stage's embedding for previous-box tokens; its forward replaces the trajectory by the
      # fixed command tokens, so this table is carried but not read.
      self.prev_position_embeddings = self.param(
          "prev_position_embeddings", nn.initializers.normal(1.0), (s.prenum * 4, d), f32)
    self.output_bias = self.param("output_bias", nn.initializers.zeros, (s.vocab_size,), f32)
    rates = s.drop_path_rates()
    self.layers = [
        Block(s.num_heads, s.mlp_ratio, s.qkv_bias, s.norm_eps, s.masked_norm, s.masked_norm_eps, rates[i],
              dtype=self.dtype, name=name)
        for i, name in enumerate(s.layer_names())]
    self.norm = nn.LayerNorm(epsilon=s.norm_eps, dtype=self.dtype, name="norm")

  def command_embedding_table(self):
    """The word-embedding matrix as the forward sees it.

    With `word_max_norm` (sparse stage), PyTorch's `nn.Embedding(max_norm=1)` renormalises the looked-up rows
    in place before the output projection reads the same matrix, so the command-token rows enter both the
    lookup and the logits with norm <= max_norm. PyTorch does it in place under no_grad, so its gradient
    is taken at the renormalised rows and flows to the stored rows unscaled: the rescale here passes the
    gradient straight through (`renorm_command_rows`); the optimizer updates from the renormalised rows
    as well (`optim.make_optimizer`).
    """
    table = jnp.asarray(self.word_embeddings)
    if self.spec.word_max_norm > 0:
      table = renorm_command_rows(table, self.spec)
    return table

  def embed_templates(self, templates):
    """`[B, T, H_z, W_z, 3]` -> `[B, T * P_z, D]` with positional and per-slot identity embeddings."""
    b, t = templates.shape[:2]
    z = self.patch_embed(templates.reshape((b * t,) + templates.shape[2:]).astype(self.dtype))
    z = z.reshape(b, t, -1, self.spec.embed_dim)
    z = z + self.template_pos_embed[:, None] + self.identity[:, :t, None, :]
    return z.reshape(b, -1, self.spec.embed_dim)

  def embed_search(self, search):
    """`[B, H_x, W_x, 3]` -> `[B, P_x, D]`."""
    b = search.shape[0]
    x = self.patch_embed(search.astype(self.dtype)).reshape(b, -1, self.spec.embed_dim)
    return x + self.identity[:, -1][:, None] + self.search_pos_embed

  def coord_logits(self, tokens, table):
    """Final norm of the 4 command tokens, times the shared word-embedding matrix, plus the bias."""
    feats = self.norm(tokens[:, -4:])
    return (jnp.einsum("bnd,vd->bnv", feats.astype(jnp.float32), table) + self.output_bias)

  def __call__(self, templates, search, token_mask=None, prune_mode: str = "track",
               deterministic: bool = True):
    s = self.spec
    if templates.shape[1] != s.num_templates:
      raise ValueError(f"templates has {templates.shape[1]} slots; the config says "
                       f"data.template.number={s.num_templates}")
    b = search.shape[0]
    table = self.command_embedding_table()
    commands = jnp.broadcast_to(jnp.asarray(s.command_tokens), (b, 4))
    command_tokens = table[commands] + self.position_embeddings[None]
    tokens = jnp.concatenate(
        [self.embed_templates(templates), self.embed_search(search), command_tokens.astype(self.dtype)], axis=1)

    sparse = s.stage == "fartrack_sparse"
    key_bias = None
    norm_mask = None
    if sparse:
      if token_mask is None:
        token_mask = jnp.ones((b, s.num_tokens), dtype=bool)
      token_mask = jnp.asarray(token_mask, dtype=bool)
      if token_mask.ndim == 3:
        key_bias = jnp.where(token_mask, 0.0, -jnp.inf)[:, None]
        norm_mask = token_mask[:, 0, :]
      else:
        key_bias = jnp.where(token_mask, 0.0, -jnp.inf)[:, None, None, :]
        norm_mask = token_mask
    elif token_mask is not None:
      raise ValueError(f"token_mask is only used by the sparse stage; this model is stage={s.stage!r}")

    layer_logits = []
    attention_sum = None
    n = s.num_tokens
    centre = s.center_search_token
    # The last layer only has to produce the 4 command tokens (the ranking's attention row is computed on
    # its own in every layer): every other token's output there is never read.
    last_rows = tuple(range(n - 4, n))
    for i, layer in enumerate(self.layers):
      last = i == s.depth - 1
      tokens, probs = layer(tokens, norm_mask, key_bias, deterministic, last_rows if last else None,
                            centre if sparse else None)
      if sparse:
        # Only the centre search token's row is ranked; sum over layers, mean over heads (the original's
        # attn_sum.mean(dim=1)). The ranking is not differentiated (the original detaches it).
        row = probs[:, :, :s.num_template_tokens]
        row = jax.lax.stop_gradient(row)
        attention_sum = row if attention_sum is None else attention_sum + row
      if i in s.logit_layers and i != s.depth - 1:
        layer_logits.append(self.coord_logits(tokens, table))

    logits = self.coord_logits(tokens, table)
    out = {"coord_logits": logits}
    if s.logit_layers:
      out["layer_logits"] = jnp.stack(layer_logits + [logits], axis=0)
    if sparse:
      template_attention = attention_sum.mean(axis=1)
      out["template_attention"] = template_attention
      if prune_mode == "track":
        out["keep_masks"] = track_keep_masks(template_attention, s)
      elif prune_mode == "train":
        generated = train_keep_mask(template_attention, s)
        all_visible = jnp.all(norm_mask)
        out["keep_masks"] = jnp.where(all_visible, generated, norm_mask)
      else:
        raise ValueError(f"prune_mode must be 'track' or 'train', got {prune_mode!r}")
    return out


@jax.custom_vjp
def _max_norm_rows(rows, max_norm):
  norms = jnp.linalg.norm(rows, axis=-1, keepdims=True)
  # embedding_renorm_: scale = max_norm / (norm + 1e-7) where norm > max_norm.
  return rows * jnp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)


def _max_norm_rows_fwd(rows, max_norm):
  return _max_norm_rows(rows, max_norm), None


def _max_norm_rows_bwd(_, g):
  return g, None


_max_norm_rows.defvjp(_max_norm_rows_fwd, _max_norm_rows_bwd)


def renorm_command_rows(table, spec: "ModelSpec"):
  """`table` [V, D] with the command-token rows scaled to norm <= `spec.word_max_norm`, as PyTorch's
  `embedding_renorm_` leaves the stored weight; the gradient passes straight through (PyTorch renormalises
  in place, outside autograd)."""
  idx = jnp.asarray(spec.command_tokens)
  return table.at[idx].set(_max_norm_rows(table[idx], jnp.float32(spec.word_max_norm)))


def build_model(config, dtype: Optional[str] = None) -> FARTrack:
  """The network for a config; `dtype` overrides `config.dtype` ("float32" | "bfloat16")."""
  name = dtype or config.get("dtype", "float32")
  return FARTrack(ModelSpec.from_config(config), dtype=jnp.dtype(name))


def dummy_inputs(spec: ModelSpec, batch: int = 1):
  """Zero templates and search of the right static shapes."""
  templates = jnp.zeros((batch, spec.num_templates, spec.template_size, spec.template_size, 3), jnp.float32)
  search = jnp.zeros((batch, spec.search_size, spec.search_size, 3), jnp.float32)
  return templates, search


def init_params(model: FARTrack, rng) -> dict:
  """Fresh float32 params (the original's init distributions, not its values).

  One compiled program: run eagerly, flax's init dispatches (and on first use compiles) each of its
  ~1,000 operations alone, 10-20 s on a 2-core CPU where the compiled init takes a few seconds, or well
  under one from JAX's persistent compilation cache."""
  return _compiled_init(model, rng)


@functools.partial(jax.jit, static_argnums=0)
def _compiled_init(model: FARTrack, rng) -> dict:
  templates, search = dummy_inputs(model.spec)
  return model.init(rng, templates, search)["params"]


def bin_centers(spec: ModelSpec):
  """The coordinate value of each bin for the expectation decoding: `torch.range(-range/2 + 0.5,
  range/2 + 0.5 - 1/(bins*range), 2/(bins*range))`, i.e. `start + k * step`, `k < bins * range`."""
  start = -spec.range * 0.5 + 0.5
  step = 2.0 / (spec.bins * spec.range)
  return start + step * jnp.arange(spec.num_coord_bins, dtype=jnp.float32)


def decode_boxes(coord_logits, spec: ModelSpec):
  """The sparse tracker's box decoding, in search-crop units (0..1 spans the crop).

  Args:
    coord_logits: `[B, 4, V]`.
  Returns `[B, 4]` (x0, y0, x1, y1): the mean of the argmax decoding over the whole vocabulary,
  `(bin + 0.5) / (bins - 1) - 0.5`, and the softmax expectation over the coordinate bins only.
  """
  argmax = jnp.argmax(coord_logits, axis=-1).astype(jnp.float32)
  by_argmax = (argmax + 0.5) / (spec.bins - 1) - 0.5
  return (by_argmax + expectation_boxes(coord_logits, spec)) / 2


def decode_argmax_boxes(coord_logits, spec: ModelSpec):
  """The frame-level and distill trackers' decoding: argmax over the whole vocabulary,
  `bin / (bins - 1) - 0.5` (no half-bin offset, unlike the sparse tracker). `[B, 4, V]` -> `[B, 4]`."""
  return jnp.argmax(coord_logits, axis=-1).astype(jnp.float32) / (spec.bins - 1) - 0.5


def expectation_boxes(coord_logits, spec: ModelSpec):
  """Softmax expectation over the coordinate bins (`bin_centers`, the tracker's grid), `[B, 4, V]` -> `[B, 4]`.
  The training losses decode over `losses.coordinate_grid`, the original actor's torch.range grid, which is
  computed in float64 and can differ from this one by a float32 ulp."""
  probs = jax.nn.softmax(coord_logits[..., :spec.num_coord_bins].astype(jnp.float32), axis=-1)
  return jnp.sum(probs * bin_centers(spec), axis=-1)


def param_count(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
