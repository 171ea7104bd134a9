"""Timing helpers: interleaved repeats, medians, compile timing, HLO fusion counts."""

from __future__ import annotations

import re
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def interleaved(
  fns: dict[str, Callable[[], Any]],
  repeats: int,
  warmup: int = 1,
  min_sample_s: float = 0.02,
  max_inner: int = 200,
  setup: dict[str, Callable[[], Any]] | None = None,
  sync: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, dict[str, float]]:
  """Times each fn (which must block until its work is done) in rounds A B C, B C A, ...

  Each sample runs fn ``inner`` times (chosen so a sample lasts about
  min_sample_s) and records the time per call. Returns, per name, the median,
  p25/p75 (seconds per call), the sample count and inner. ``setup[name]`` runs,
  untimed, before each of that fn's samples (e.g. torch.set_num_threads);
  ``sync[name]`` runs, timed, after the ``inner`` calls: steps are dispatched
  back to back as in a training loop and waited for once per sample.
  """
  names = list(fns)
  setup, sync = setup or {}, sync or {}
  inner = {}
  for name in names:
    setup.get(name, lambda: None)()
    for _ in range(warmup):
      fns[name]()
    sync.get(name, lambda: None)()
    t = time.perf_counter()
    fns[name]()
    sync.get(name, lambda: None)()
    once = max(time.perf_counter() - t, 1e-7)
    inner[name] = int(min(max_inner, max(1, round(min_sample_s / once))))
  samples: dict[str, list[float]] = {n: [] for n in names}
  for r in range(repeats):
    order = names[r % len(names) :] + names[: r % len(names)]
    for name in order:
      k = inner[name]
      setup.get(name, lambda: None)()
      t = time.perf_counter()
      for _ in range(k):
        fns[name]()
      sync.get(name, lambda: None)()
      samples[name].append((time.perf_counter() - t) / k)
  return {n: summarize(samples[n]) | {'inner': inner[n]} for n in names}


def summarize(xs: list[float]) -> dict[str, float]:
  xs = sorted(xs)
  q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
  return {'median': statistics.median(xs), 'p25': q[0], 'p75': q[2], 'min': xs[0], 'n': len(xs)}


def count_fusions(hlo_text: str) -> dict[str, int]:
  """Fusion calls in an optimized HLO module's entry computation (kernels launched
  per step, one per fusion on CPU and GPU), by kind, plus 'total', and 'distinct':
  the fused computations that differ other than by their names. XLA compiles a
  kernel per distinct computation and reuses it for equal fusions (on the CPU each
  is an LLVM module, the bulk of a small step's compile time)."""
  entry = hlo_text[hlo_text.find('ENTRY') :]
  kinds = re.findall(r'= [^=]*? fusion\([^\n]*?kind=(k\w+)', entry)
  out: dict[str, int] = {'total': len(kinds)}
  for k in kinds:
    out[k] = out.get(k, 0) + 1
  bodies = dict(re.findall(r'^(%[\w.\-]+) \(.*?\{\n(.*?)\n\}', hlo_text, re.DOTALL | re.MULTILINE))
  called = re.findall(r'= [^=\n]*? fusion\([^\n]*?calls=(%[\w.\-]+)', entry)
  out['distinct'] = len({_canonical(bodies.get(c, c)) for c in called})
  # ops outside fusions that touch memory (copies, dynamic-update-slices, while loops)
  out['while'] = len(re.findall(r'= [^\n]* while\(', entry))
  out['copy'] = len(re.findall(r'= [^\n]* copy\(', entry))
  out['conditional'] = len(re.findall(r'= [^\n]* conditional\(', entry))
  return out


def _canonical(body: str) -> str:
  """A computation's text without metadata, each name replaced by its order of appearance."""
  names: dict[str, str] = {}
  body = re.sub(r', metadata=\{[^}]*\}', '', body)
  return re.sub(r'%[\w.\-]+', lambda m: names.setdefault(m.group(0), f'%{len(names)}'), body)


def compile_step(step_fn: Callable, args: tuple, donate: tuple[int, ...] = (0, 1)) -> tuple[Any, dict[str, float]]:
  """jit(step_fn, donate) traced, lowered and compiled from scratch (a fresh jit
  object, so no cache hit), each phase timed. Returns (compiled, times)."""
  f = jax.jit(lambda *a: step_fn(*a), donate_argnums=donate)
  t0 = time.perf_counter()
  traced = f.trace(*args)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  return compiled, {'trace': t1 - t0, 'lower': t2 - t1, 'compile': t3 - t2, 'total': t3 - t0}


def block(x: Any) -> Any:
  return jax.block_until_ready(x)


def shape_of(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, 'shape') else x, tree)


def tree_bytes(tree: Any, scalars: bool = True) -> int:
  return sum(
    int(x.size) * jnp.dtype(x.dtype).itemsize
    for x in jax.tree.leaves(tree)
    if hasattr(x, 'dtype') and (scalars or x.ndim > 0)
  )
