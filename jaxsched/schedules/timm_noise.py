"""timm's lr noise (``timm.scheduler.Scheduler._add_noise``), drawn on the host as torch draws it.

For a step t in the noise range timm seeds a fresh ``torch.Generator`` with ``noise_seed + t`` and
draws ``torch.randn(1, generator=g).item() * noise_std`` until its magnitude is below ``noise_pct``
(``_calculate_noise`` with ``noise_type='normal'``, the only type timm's LR schedulers pass); the lr
becomes ``lr + lr * noise``. torch's CPU generator is MT19937 seeded with the seed's low 32 bits
(``init_genrand``); ``randn`` of one float32 is ``at::normal_distribution<double>``: two 53-bit
uniforms u1, u2, each from two 32-bit words (high word first), ``r = sqrt(-2 log1p(-u2))``,
``theta = 2 pi u1``, the draw ``r cos(theta)`` cast to float32, and ``r sin(theta)`` kept in the
generator for its next normal draw. This module reproduces that stream for many seeds at once in
NumPy (the words) and ``math`` (the C library's log1p, cos and sin, as torch calls them).
"""

from __future__ import annotations

import math

import numpy as np

_N = 624  # MT19937's state words
_M = 397
_MASK = 0xFFFFFFFF
_CHUNK = 8192  # seeds whose 624-word states are held at once (20 MB)


def _twist(mt: np.ndarray) -> None:
  """MT19937's ``next_state`` on each column of ``mt`` (uint64 holding 32-bit words, one row per
  state word), in place: the sequential loop in four slices whose sources are ready (old words
  ahead of i, new ones behind)."""
  k = _N - _M
  for lo, hi in ((0, k), (k, 2 * k), (2 * k, _N - 1), (_N - 1, _N)):
    nxt = mt[lo + 1 : hi + 1] if hi < _N else mt[:1]
    src = mt[lo + _M : hi + _M] if lo < k else mt[lo - k : hi - k]
    y = (mt[lo:hi] & 0x80000000) | (nxt & 0x7FFFFFFF)
    mt[lo:hi] = src ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)


def _tempered(mt: np.ndarray) -> np.ndarray:
  y = mt ^ (mt >> 11)
  y ^= (y << 7) & 0x9D2C5680
  y ^= (y << 15) & 0xEFC60000
  return (y ^ (y >> 18)) & _MASK


def _seeded(seeds: np.ndarray) -> np.ndarray:
  """The states after ``init_genrand(seed & 0xffffffff)``, one column per seed."""
  mt = np.empty((_N, len(seeds)), np.uint64)
  mt[0] = seeds.astype(np.uint64) & _MASK
  for i in range(1, _N):
    x = mt[i - 1]
    mt[i] = (np.uint64(1812433253) * (x ^ (x >> np.uint64(30))) + np.uint64(i)) & np.uint64(_MASK)
  return mt


def _uniform53(high: np.ndarray, low: np.ndarray) -> np.ndarray:
  """torch's ``uniform_real_distribution<double>(0, 1)`` of ``random64() = high << 32 | low``."""
  return (((high << np.uint64(32)) | low) & np.uint64(2**53 - 1)).astype(np.float64) * 2.0**-53


def _normal_pair(u1: float, u2: float) -> tuple[float, float]:
  """``at::normal_distribution<double>``: the draw and the value it caches, before float32."""
  r = math.sqrt(-2.0 * math.log1p(-u2))
  theta = 2.0 * math.pi * u1
  return r * math.cos(theta), r * math.sin(theta)


def normal_noise(seeds: np.ndarray, pct: float, std: float) -> np.ndarray:
  """timm's ``_calculate_noise`` for ``noise_type='normal'`` with ``noise_seed + t`` = each of
  ``seeds``: the first ``randn * std`` of the seed's generator with magnitude below ``pct`` (``pct``
  must be > 0: timm loops forever otherwise), float64."""
  seeds = np.asarray(seeds, np.int64)
  out = np.empty(len(seeds))
  for start in range(0, len(seeds), _CHUNK):
    rows = np.arange(start, min(start + _CHUNK, len(seeds)))
    mt = _seeded(seeds[rows])
    while len(rows):
      _twist(mt)
      pending = np.ones(len(rows), bool)
      for q in range(0, _N, 4):  # each quadruple of words: a draw and the draw the generator caches
        todo = np.flatnonzero(pending)
        if not len(todo):
          break
        w = _tempered(mt[q : q + 4, todo])
        u1, u2 = _uniform53(w[0], w[1]).tolist(), _uniform53(w[2], w[3]).tolist()
        noise = np.asarray([_normal_pair(a, b) for a, b in zip(u1, u2)]).astype(np.float32).astype(np.float64) * std
        ok = np.abs(noise) < pct
        done = ok[:, 0] | ok[:, 1]
        out[rows[todo[done]]] = np.where(ok[:, 0], noise[:, 0], noise[:, 1])[done]
        pending[todo[done]] = False
      rows, mt = rows[pending], mt[:, pending]
  return out


def uniform_noise(seeds: np.ndarray, pct: float) -> np.ndarray:
  """timm's ``_calculate_noise`` for a ``noise_type`` other than 'normal': ``2 * (torch.rand(1,
  generator=g).item() - 0.5) * pct`` with ``g`` seeded with each of ``seeds``, float64. torch's CPU
  ``rand`` of one float32 is ``uniform_real_distribution<float>`` of the generator's first 32-bit word:
  its low 24 bits times 2**-24."""
  seeds = np.asarray(seeds, np.int64)
  out = np.empty(len(seeds))
  for start in range(0, len(seeds), _CHUNK):
    mt = _seeded(seeds[start : start + _CHUNK])
    _twist(mt)
    u = (_tempered(mt[0]) & np.uint64(2**24 - 1)).astype(np.float64) * 2.0**-24
    out[start : start + _CHUNK] = 2.0 * (u - 0.5) * pct
  return out
