"""Which stored templates fill the template slots: the original's `template_update_sampling`.

Plain numpy, so that the JAX tracker and the runtime tracker (`fartrack_jax/deploy/`, no JAX) share it.
"""

from __future__ import annotations

import numpy as np


def selection_row(stored: int, num_templates: int, base: float = 0.7) -> list[int]:
  """The stored-template index of each of the `num_templates` slots when `stored` (>= 1) templates exist.

  Before `num_templates` exist the slots repeat the oldest ("mode1": 0,0,0,1,2); afterwards "exponential":
  `[0, int((S - 1) * (1 - base ** i)) for i = 1..T-2, S - 1]`, in float64 as the original's Python floats
  (`int(...)` flips at different S in float32).
  """
  if stored < num_templates:
    shift = num_templates - stored
    return [min(max(0, pos - shift), stored - 1) for pos in range(num_templates)]
  return [0] + [int((stored - 1) * (1 - base ** i)) for i in range(1, num_templates - 1)] + [stored - 1]


def selection_table(capacity: int, num_templates: int, base: float = 0.7) -> np.ndarray:
  """`[capacity + 1, T]` int32: row S is `selection_row(S)` (row 0, no template stored, is all zeros)."""
  table = np.zeros((capacity + 1, num_templates), np.int32)
  for s in range(1, capacity + 1):
    table[s] = selection_row(s, num_templates, base)
  return table
