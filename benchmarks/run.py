"""jaxsched's benchmark: `python benchmarks/run.py` writes benchmarks/RESULTS.md and results.json.

Sections (issue 8):
  1. train-step time, jaxsched.build vs hand-written Optax (same math), 10 and 1,000 leaves
  2. compile time of the same steps
  3. against torch (for-loop, foreach, fused Adam / AdamW / SGD), same parameter count
  4. schedule evaluation: a 1,000,000-step curve through jit(vmap) vs stepping torch's scheduler
  5. recompiles over 1,000 steps with plateau reductions and LR changes
  6. optimizer-state bytes per parameter byte, vs torch
  7. bandwidth: Adam's achieved bytes/s as a fraction of the device's measured copy bandwidth
  8. wrappers: accumulation, EMA and SWA from jaxsched.build vs the same written by hand in Optax,
     whole train steps (grad + update + apply) of a small MLP and of a 4M-parameter one
  9. timm's optimizers (timm.<name>, timm's numbers) vs Optax's implementation of the same
     algorithm, update + apply at about 3M parameters (not in the default run: --sections 9)

Every figure is a median over interleaved repeats (A B C, B C A, ...); every ratio
compares figures of the same run. results.json keeps one entry per device
(cpu, gpu); a run replaces its own device's entry and keeps the others, and
RESULTS.md shows them side by side. A run of some sections only (``--sections 8``)
is an entry of its own (``cpu-sections-8``), so it keeps the full run's. `--merge other/results.json` imports the
entries of a run made elsewhere (e.g. on a GPU machine).

Options: --quick (tiny sizes, seconds: the smoke test), --out DIR, --sections 1,3,...,
--no-diagnose (skip the variants that take jaxsched apart).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import time
import warnings
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import report as R  # noqa: E402
import timing  # noqa: E402
import variants as V  # noqa: E402
import wrappers as W  # noqa: E402

import jaxsched  # noqa: E402

# ---------------------------------------------------------------- sizes


def plan(quick: bool) -> dict[str, Any]:
  if quick:
    return dict(
      sizes=[(3, 4_096), (12, 64)],
      distinct_sizes=[(3, 4_096)],
      repeats=3,
      compile_repeats=1,
      big_compile_repeats=1,
      torch_repeats=2,
      schedule_steps=20_000,
      torch_schedule_steps=300,
      recompile_steps=30,
      copy_elems=1 << 20,
      chunk=1 << 10,
      torch_jax_all_sizes=('Adam',),
      wrapper_models=('small',),
      wrapper_repeats=3,
      wrapper_sample_s=0.02,
      timm_shapes=((64, 64), (64,)),
    )
  return dict(
    sizes=[(10, 1_000_000), (1_000, 10_000)],
    distinct_sizes=[(10, 1_000_000)],
    repeats=15,
    compile_repeats=7,
    big_compile_repeats=3,
    torch_repeats=5,
    schedule_steps=1_000_000,
    torch_schedule_steps=20_000,
    recompile_steps=1_000,
    copy_elems=1 << 26,
    chunk=1 << 16,
    torch_jax_all_sizes=('Adam',),
    wrapper_models=('small', '4M'),
    wrapper_repeats=41,
    wrapper_sample_s=0.05,
    timm_shapes=((1024, 1024),) * 3 + ((1024,),),
  )


# ---------------------------------------------------------------- metadata


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def meta(argv: list[str]) -> dict[str, Any]:
  import flax
  import jaxlib
  import torch

  dev = jax.devices()[0]
  out = {
    'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
    'command': 'python benchmarks/run.py' + (' ' + ' '.join(argv) if argv else ''),
    'machine': f'{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}',
    'backend': jax.default_backend(),
    'device': f'{dev.platform}: {getattr(dev, "device_kind", str(dev))}',
    'versions': {
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jaxlib': jaxlib.__version__,
      'optax': optax.__version__,
      'flax': flax.__version__,
      'torch': torch.__version__,
      'jaxsched': jaxsched.__version__,
      'numpy': np.__version__,
    },
    'code': code_version(),
    'torch_threads': torch.get_num_threads(),
    'torch_device': torch_device(),
  }
  try:
    out['load_average_start'] = list(os.getloadavg())
  except OSError:
    pass
  return out


def code_version() -> str:
  """The measured code: the git commit, marked ``+changes`` when jaxsched/ or the
  benchmark's own .py files differ from it; outside a git checkout (a copy of the
  tree on a GPU machine), what the environment variable BENCH_CODE says."""
  import subprocess

  root = os.path.dirname(HERE)
  try:
    commit = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--', 'jaxsched', 'benchmarks/*.py'],
      cwd=root,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return os.environ.get('BENCH_CODE', 'unknown (not a git checkout; set BENCH_CODE)')
  return commit + (' +changes' if dirty else '')


def torch_device() -> str:
  import torch

  return 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'


def log(*a):
  print(f'[{time.strftime("%H:%M:%S")}]', *a, flush=True)


# ---------------------------------------------------------------- JAX variant plumbing


class Variant:
  """A step to time: from an Optax transformation, or a direct step + init."""

  def __init__(self, name: str, tx: optax.GradientTransformation | None = None, step=None, init=None, role: str = ''):
    self.name, self.role = name, role
    if tx is not None:

      def step_fn(p, s, g, tx=tx):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

      self.step, self.init = step_fn, tx.init
    else:
      self.step, self.init = step, init
    self.compiled = None
    self.compile_times: list[dict[str, float]] = []
    self.fusions: dict[str, int] = {}


class Holder:
  def __init__(self, compiled, params, state, grads):
    self.c, self.p, self.s, self.g = compiled, params, state, grads

  def __call__(self):  # dispatch only: a training loop does not wait for each step
    self.p, self.s = self.c(self.p, self.s, self.g)

  def block(self):
    jax.block_until_ready((self.p, self.s))


def compile_all(variants: list[Variant], params, grads, repeats: int) -> None:
  """Compiles every variant ``repeats`` times, interleaved, from scratch each time."""
  args_state = {v.name: timing.shape_of(jax.eval_shape(v.init, params)) for v in variants}
  p_shape, g_shape = timing.shape_of(params), timing.shape_of(grads)
  for r in range(repeats):
    order = variants[r % len(variants) :] + variants[: r % len(variants)]
    for v in order:
      gc.collect()
      compiled, t = timing.compile_step(v.step, (p_shape, args_state[v.name], g_shape))
      v.compile_times.append(t)
      v.compiled = compiled
  for v in variants:
    try:
      v.fusions = timing.count_fusions(v.compiled.as_text())
    except Exception as e:  # noqa: BLE001
      v.fusions = {'error': repr(e)}


def holders(variants: list[Variant], params, grads) -> dict[str, Holder]:
  out = {}
  for v in variants:
    p = jax.tree.map(jnp.copy, params)
    s = jax.jit(v.init)(p)  # under jit: mu and nu never share a buffer (see RESULTS.md)
    out[v.name] = Holder(v.compiled, p, s, grads)
  return out


def compile_summary(v: Variant) -> dict[str, Any]:
  ts = v.compile_times
  return {k: timing.summarize([t[k] for t in ts]) for k in ('trace', 'lower', 'compile', 'total')}


# ---------------------------------------------------------------- 1 + 2: train step and compile


def scenario_variants(scenario: str, params, diagnose: bool, chunk: int) -> list[Variant]:
  vs = [
    Variant('hand-written optax', V.hand_written(scenario), role='baseline'),
    Variant('jaxsched.build', V.jaxsched_build(scenario, params), role='jaxsched'),
    # A/A control: the baseline's code again, as its own executable and buffers. Its ratio
    # is the noise floor of this machine and run: a jaxsched ratio within it is no difference.
    Variant('control: hand-written optax, compiled again', V.hand_written(scenario), role='control'),
  ]
  if scenario == 'groups_schedule':
    vs.append(Variant('naive multi_transform(adam per group)', V.naive_groups(scenario), role='reference'))
  if scenario == 'one_group' and diagnose:
    diag = [
      ('diag: optax.inject_hyperparams(optax.adam)', lambda: {'tx': V.optax_injected()}),
      ('diag: jaxsched.optimizer (no multi_transform)', lambda: {'tx': V.js_optimizer_only()}),
      ('diag: jaxsched adam chain, float hparams+lr (no inject)', lambda: {'tx': V.js_factory_only()}),
    ]
    if jax.default_backend() == 'cpu':  # XLA:GPU already fuses Adam into one multi-output kernel
      diag.append(
        (
          'diag: one-pass chunked adam (fori_loop)',
          lambda: {'step': V.one_pass_adam_step(chunk), 'init': V.one_pass_init},
        )
      )
    for name, make in diag:
      try:  # a diagnostic reaches into jaxsched's internals, which may change
        vs.append(Variant(name, role='diagnostic', **make()))
      except Exception as e:  # noqa: BLE001
        log(f'skipped {name}: {e!r}')
  return vs


def section_train_step(p: dict, diagnose: bool, cache: dict) -> list[dict]:
  """Every scenario at every size, with all leaves of one shape; then at
  ``distinct_sizes`` with no two leaves of one shape, where XLA cannot reuse one
  leaf's kernel for another (a real model's mix lies between the two)."""
  rows = []
  runs = [(n, size, False) for n, size in p['sizes']] + [(n, size, True) for n, size in p['distinct_sizes']]
  for leaves, size, distinct in runs:
    big = leaves >= 500
    shapes = 'distinct' if distinct else 'same'
    for scenario in ('one_group', 'groups_schedule', 'groups_plateau'):
      log(f'train step: {scenario}, {leaves} leaves x {size}, {shapes} shapes')
      params = V.make_params(leaves, size, recurrent=scenario.startswith('groups'), distinct=distinct)
      grads = V.make_grads(params)
      vs = scenario_variants(scenario, params, diagnose and not distinct, p['chunk'])
      compile_all(vs, params, grads, p['big_compile_repeats'] if big else p['compile_repeats'])
      hs = holders(vs, params, grads)
      res = timing.interleaved(hs, p['repeats'], sync={n: h.block for n, h in hs.items()})
      base = res[vs[0].name]['median']
      base_c = compile_summary(vs[0])
      for v in vs:
        c = compile_summary(v)
        rows.append(
          {
            'scenario': scenario,
            'leaves': leaves,
            'shapes': shapes,
            'params': sum(x.size for x in jax.tree.leaves(params)),
            'variant': v.name,
            'role': v.role,
            'step': res[v.name],
            'ratio': res[v.name]['median'] / base,
            'compile_s': c,
            'compile_ratio': c['total']['median'] / base_c['total']['median'],
            'fusions': v.fusions,
          }
        )
        if scenario == 'one_group' and v.role in ('baseline', 'jaxsched') and not distinct:
          cache[('Adam', v.role, leaves, size)] = v
      del hs
      gc.collect()
  return rows


# ---------------------------------------------------------------- 3: torch


def section_torch(p: dict, cache: dict) -> list[dict]:
  import torch

  dev = torch_device()
  rows = []
  for leaves, size in p['sizes']:
    for opt in ('Adam', 'AdamW', 'SGD'):
      log(f'torch: {opt}, {leaves} leaves x {size} on {dev}')
      fns: dict[str, Any] = {}
      sync: dict[str, Any] = {}
      jax_all = opt in p['torch_jax_all_sizes'] or (leaves, size) == p['sizes'][0]
      if jax_all:
        params = V.make_params(leaves, size)
        grads = V.make_grads(params)
        vs = []
        for role, name in (('baseline', 'jax: hand-written optax'), ('jaxsched', 'jax: jaxsched.build')):
          v = cache.get((opt, role, leaves, size))
          if v is None:
            tx = V.hand_written('one_group', opt) if role == 'baseline' else V.jaxsched_build('one_group', params, opt)
            v = Variant(name, tx, role=role)
            compile_all([v], params, grads, 1)
            cache[(opt, role, leaves, size)] = v
          vs.append(v)
        for v, name in zip(vs, ('jax: hand-written optax', 'jax: jaxsched.build')):
          pp = jax.tree.map(jnp.copy, params)
          fns[name] = Holder(v.compiled, pp, jax.jit(v.init)(pp), grads)
          sync[name] = fns[name].block
      gen = torch.Generator().manual_seed(0)
      impls = ('for-loop', 'foreach', 'fused')
      threads = torch.get_num_threads()
      setup = {name: (lambda: torch.set_num_threads(threads)) for name in fns}  # noqa: B023
      for impl in impls:
        ts = [torch.randn(size, generator=gen).to(dev).requires_grad_() for _ in range(leaves)]
        for t in ts:
          t.grad = 0.01 * torch.randn(size, generator=gen).to(dev)
        try:
          o = V.torch_optimizer(opt, impl, ts)
          o.step()
        except Exception as e:  # noqa: BLE001
          rows.append(
            {
              'optimizer': opt,
              'leaves': leaves,
              'params': leaves * size,
              'variant': f'torch {impl}',
              'error': repr(e)[:200],
            }
          )
          continue

        def run(o=o):
          o.step()

        fns[f'torch {impl}'] = run
        if dev == 'cuda':
          sync[f'torch {impl}'] = torch.cuda.synchronize
        setup[f'torch {impl}'] = lambda: torch.set_num_threads(threads)  # noqa: B023
        if dev == 'cpu' and threads > 1:  # torch's OpenMP barriers suffer most from a loaded machine
          fns[f'torch {impl} (1 thread)'] = run
          setup[f'torch {impl} (1 thread)'] = lambda: torch.set_num_threads(1)
      # torch's multi-threaded steps at 1,000 leaves can take seconds on a loaded 2-core machine
      repeats = p['torch_repeats'] if leaves < 500 else max(2, p['torch_repeats'] - 2)
      res = timing.interleaved(fns, repeats, setup=setup, sync=sync)
      torch.set_num_threads(threads)
      ref = res.get('torch fused', res.get('torch foreach'))
      for name, r in res.items():
        rows.append(
          {
            'optimizer': opt,
            'leaves': leaves,
            'params': leaves * size,
            'variant': name,
            'step': r,
            'vs_torch': {impl: res[impl]['median'] / r['median'] for impl in res if impl.startswith('torch ')},
            'ratio_to_fused': r['median'] / ref['median'] if ref else None,
          }
        )
      del fns
      gc.collect()
  return rows


# ---------------------------------------------------------------- 4: schedules

SCHEDULES = [
  ('CosineAnnealingLR', {'T_max': 10_000}, 'SGD'),
  ('StepLR', {'step_size': 1000, 'gamma': 0.99}, 'SGD'),
  ('CosineAnnealingWarmRestarts', {'T_0': 1000, 'T_mult': 2}, 'SGD'),
  ('OneCycleLR', {'max_lr': 0.1, 'total_steps': None}, 'SGD'),
  ('CyclicLR', {'base_lr': 1e-4, 'max_lr': 0.1, 'step_size_up': 2000}, 'SGD'),
]


def section_schedules(p: dict) -> list[dict]:
  import torch

  n, k = p['schedule_steps'], p['torch_schedule_steps']
  rows, fns, curves, compile_s = [], {}, {}, {}
  counts = jnp.arange(n + 1, dtype=jnp.int32)
  for name, kw, _ in SCHEDULES:
    kw = {key: (n + 1 if v is None else v) for key, v in kw.items()}
    sched = jaxsched.schedule(name, 0.1, **kw)
    f = jax.jit(jax.vmap(sched))
    t = time.perf_counter()
    c = f.lower(counts).compile()
    compile_s[name] = time.perf_counter() - t
    fns[name] = lambda c=c: jax.block_until_ready(c(counts))
    curves[name] = np.asarray(c(counts))
  log(f'schedules: jit(vmap) over {n} steps')
  res = timing.interleaved(fns, p['repeats'])
  for name, kw, _ in SCHEDULES:
    kw = {key: (n + 1 if v is None else v) for key, v in kw.items()}
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    sched = getattr(torch.optim.lr_scheduler, name)(opt, **kw)
    lrs, times = [], []
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      chunks = 3
      for _ in range(chunks):
        t = time.perf_counter()
        for _ in range(k // chunks):
          sched.step()
          lrs.append(opt.param_groups[0]['lr'])
        times.append((time.perf_counter() - t) / (k // chunks))
    per_step = float(np.median(times))
    ref = np.asarray(lrs)
    mine = curves[name][1 : len(ref) + 1]
    rel = float(np.max(np.abs(mine - ref) / np.maximum(np.abs(ref), 1e-30)))
    rows.append(
      {
        'schedule': name,
        'kwargs': kw,
        'steps': n,
        'jax_s': res[name],
        'jax_compile_s': compile_s[name],
        'torch_per_step_s': per_step,
        'torch_steps_timed': len(ref),
        'torch_extrapolated_s': per_step * n,
        'speedup': per_step * n / res[name]['median'],
        'max_rel_diff_vs_torch': rel,
      }
    )
  return rows


# ---------------------------------------------------------------- 5: recompiles


def section_recompiles(p: dict) -> list[dict]:
  from jax._src import dispatch

  events = []
  jax.monitoring.register_event_duration_secs_listener(
    lambda name, dur, **kw: events.append(name) if name == dispatch.BACKEND_COMPILE_EVENT else None
  )
  rows = []
  steps = p['recompile_steps']
  params = V.make_params(10, 1000, recurrent=True)
  grads = V.make_grads(params)
  cfgs = {
    'groups + ReduceLROnPlateau (report every 10 steps)': V.config('groups_plateau'),
    'groups + StepLR(step_size=50), interval step': dict(
      V.config('groups_schedule'), scheduler='StepLR', scheduler_kwargs={'step_size': 50, 'gamma': 0.5}
    ),
    'groups + OneCycleLR (cycles beta1 too)': dict(
      V.config('groups_schedule'), scheduler='OneCycleLR', scheduler_kwargs={'max_lr': 0.01, 'total_steps': steps + 1}
    ),
  }
  for label, cfg in cfgs.items():
    log(f'recompiles: {label}')
    tx = jaxsched.build(cfg, params)
    traces = [0]

    def step(p_, s, g, tx=tx):
      traces[0] += 1  # noqa: B023
      u, s = tx.update(g, s, p_)
      return optax.apply_updates(p_, u), s

    step_j = jax.jit(step, donate_argnums=(0, 1))
    report_j = jax.jit(lambda s: jaxsched.report(s, {'val_loss': 1.0}), donate_argnums=0)
    pp = jax.tree.map(jnp.copy, params)
    s = jax.jit(tx.init)(pp)
    start = len(events)
    lrs = set()
    after_first = None
    for i in range(steps):
      pp, s = step_j(pp, s, grads)
      if (i + 1) % 10 == 0:
        s = report_j(s)
      if i == 9:
        jax.block_until_ready(s)
        after_first = len(events)
      lrs.add(tuple(float(v) for v in jax.tree.leaves(jaxsched.current_lr(s))))
    jax.block_until_ready((pp, s))
    rows.append(
      {
        'config': label,
        'steps': steps,
        'compiles_total': len(events) - start,
        'compiles_after_first': len(events) - after_first,
        'traces_of_step': traces[0],
        'distinct_lr_settings': len(lrs),
      }
    )
  return rows


# ---------------------------------------------------------------- 6: memory


def _torch_state_bytes(opt) -> tuple[int, int]:
  import torch

  total = nonscalar = 0
  for st in opt.state.values():
    for v in st.values():
      for t in v if isinstance(v, (list, tuple)) else [v]:  # LBFGS keeps lists of history tensors
        if isinstance(t, torch.Tensor):
          b = t.numel() * t.element_size()
          total += b
          nonscalar += b if t.dim() > 0 else 0
  return total, nonscalar


def section_memory() -> list[dict]:
  import torch

  shapes = {'conv/kernel': (64, 64), 'conv/bias': (64,), 'head/kernel': (64, 32)}
  params = {k: jnp.ones(s, jnp.float32) for k, s in shapes.items()}
  pbytes = timing.tree_bytes(params)
  optax_eq = {
    'Adam': optax.adam(1e-3),
    'AdamW': optax.adamw(1e-3),
    'SGD': optax.sgd(1e-2, momentum=0.9),
    'RMSprop': optax.rmsprop(1e-2),
    'Adagrad': optax.adagrad(1e-2),
    'Adamax': optax.adamax(2e-3),
    'NAdam': optax.nadam(2e-3),
    'RAdam': optax.radam(1e-3),
    'Adadelta': optax.adadelta(1.0),
  }
  rows = []
  for name in jaxsched.OPTIMIZERS:
    row: dict[str, Any] = {'optimizer': name}
    mp = {'conv/kernel': params['conv/kernel'], 'head/kernel': params['head/kernel']} if name == 'Muon' else params
    mbytes = timing.tree_bytes(mp)
    try:
      state = jax.eval_shape(jaxsched.optimizer(name).init, mp)
      row['jaxsched'] = timing.tree_bytes(state) / mbytes
      row['jaxsched_arrays'] = timing.tree_bytes(state, scalars=False) / mbytes
    except Exception as e:  # noqa: BLE001
      row['jaxsched_error'] = repr(e)[:160]
    if name in optax_eq:
      st = jax.eval_shape(optax_eq[name].init, mp)
      row['optax'] = timing.tree_bytes(st) / mbytes
    try:
      ts = [torch.ones(s, requires_grad=True) for s in (v.shape for v in mp.values())]
      cls = getattr(torch.optim, name)
      kw = {'momentum': 0.9} if name == 'SGD' else {}
      opt = cls(ts, **kw)
      for t in ts:
        g = 0.01 * torch.ones_like(t)
        t.grad = g.to_sparse() if name == 'SparseAdam' else g
      if name == 'LBFGS':
        opt.step(lambda: sum((t * t).sum() for t in ts))  # noqa: B023
      else:
        opt.step()
      tot, arr = _torch_state_bytes(opt)
      row['torch'] = tot / mbytes
      row['torch_arrays'] = arr / mbytes
    except Exception as e:  # noqa: BLE001
      row['torch_error'] = repr(e)[:160]
    row['param_bytes'] = mbytes
    rows.append(row)
  del pbytes
  return rows


# ---------------------------------------------------------------- 7: bandwidth


def section_bandwidth(p: dict, train_rows: list[dict]) -> dict[str, Any]:
  n = p['copy_elems']
  one = jnp.float32(1.0)
  # donated, so the output reuses the input's memory as the optimizer step's do (a fresh
  # 256 MiB output per call would time the CPU's page faults, not its memory bandwidth)
  f = jax.jit(lambda x, s: x * s, donate_argnums=0)  # s traced: XLA cannot drop the multiply
  bufs = {'x': jnp.ones((n,), jnp.float32)}

  def run_f():
    bufs['x'] = f(bufs['x'], one)

  res = timing.interleaved(
    {'y = x * s': run_f}, p['repeats'], sync={'y = x * s': lambda: jax.block_until_ready(bufs['x'])}
  )
  nbytes = 2 * n * 4
  copy_bw = max(nbytes / r['median'] for r in res.values())
  adam = []
  for r in train_rows:
    if r['scenario'] != 'one_group' or r.get('shapes') == 'distinct':
      continue
    moved = 7 * r['params'] * 4  # read p, g, m, v; write p, m, v
    bw = moved / r['step']['median']
    adam.append(
      {
        'variant': r['variant'],
        'leaves': r['leaves'],
        'params': r['params'],
        'bytes_per_step': moved,
        'achieved_GBps': bw / 1e9,
        'fraction_of_copy': bw / copy_bw,
      }
    )
  return {'copy_elems': n, 'copy_GBps': copy_bw / 1e9, 'copy': res, 'adam': adam}


# ---------------------------------------------------------------- 8: wrappers


class Loop(Holder):
  """``unit`` micro-batches per call (one epoch of the wrappers' rules), so every
  sample holds whole accumulation groups and epochs."""

  def __init__(self, compiled, params, state, data, unit: int):
    super().__init__(compiled, params, state, data)
    self.unit = unit

  def __call__(self):
    for _ in range(self.unit):
      self.p, self.s = self.c(self.p, self.s, self.g)


def section_wrappers(p: dict) -> list[dict]:
  """Each wrapper's whole train step, jaxsched.build against the hand-written Optax
  (benchmarks/wrappers.py), all variants of one wrapper and model interleaved."""
  rows = []
  unit = W.EPOCH
  for model in p['wrapper_models']:
    params, data = W.make_model(model)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    p_shape, d_shape = timing.shape_of(params), timing.shape_of(data)
    for wrapper in ('accumulation', 'ema', 'swa'):
      log(f'wrappers: {wrapper}, {model} model ({n_params} parameters)')
      vs = W.variants(wrapper, params)
      loops, compiled, fusions, compile_s, check = {}, {}, {}, {}, {}
      for name, _, v in vs:
        gc.collect()
        state_shape = timing.shape_of(jax.eval_shape(v.init, params))
        c, t = timing.compile_step(v.step, (p_shape, state_shape, d_shape))
        compiled[name], compile_s[name] = c, t['total']
        fusions[name] = timing.count_fusions(c.as_text())
        # the same numbers on both sides: 2 epochs from the same start
        pp = jax.tree.map(jnp.copy, params)
        s = jax.jit(v.init)(pp)
        for _ in range(2 * unit):
          pp, s = c(pp, s, data)
        check[name] = (pp, W.average_of(s))
        pp = jax.tree.map(jnp.copy, params)
        loops[name] = Loop(c, pp, jax.jit(v.init)(pp), data, unit)
      res = timing.interleaved(
        loops, p['wrapper_repeats'], min_sample_s=p['wrapper_sample_s'], sync={n: h.block for n, h in loops.items()}
      )
      base_name = vs[0][0]
      base = res[base_name]['median']
      for name, role, _ in vs:
        diff = {}
        if role != 'reference':  # the reference trains without the wrapper: other numbers
          diff['params'] = W.max_rel_diff(check[name][0], check[base_name][0])
          if check[name][1] is not None:
            diff['average'] = W.max_rel_diff(check[name][1], check[base_name][1])
        rows.append(
          {
            'wrapper': wrapper,
            'model': model,
            'params': n_params,
            'variant': name,
            'role': role,
            'step': {k: (v / unit if k in ('median', 'p25', 'p75', 'min') else v) for k, v in res[name].items()},
            'ratio': res[name]['median'] / base,
            # the fastest samples: on a loaded machine, what is least disturbed by the other processes
            'ratio_min': res[name]['min'] / res[base_name]['min'],
            'compile_s': compile_s[name],
            'fusions': fusions[name],
            'max_rel_diff': diff,
          }
        )
      del loops, compiled
      gc.collect()
  return rows


# (timm ID, its keywords, Optax's transformation of the same algorithm): the keywords make both
# compute the same kind of step (LAMB's trust ratio on, no global clip; no weight decay where
# the two decay differently)
TIMM_VS_OPTAX = (
  ('lion', {'lr': 1e-4}, lambda: optax.lion(1e-4, weight_decay=0.0)),
  (
    'lamb',
    {'lr': 1e-3, 'weight_decay': 0.01, 'max_grad_norm': None},
    lambda: optax.lamb(1e-3, eps=1e-6, weight_decay=0.01),
  ),
  ('lars', {'lr': 1.0, 'weight_decay': 1e-4}, lambda: optax.lars(1.0, weight_decay=1e-4, momentum=0.9)),
  ('adabelief', {'lr': 1e-3}, lambda: optax.adabelief(1e-3)),
  ('adan', {'lr': 1e-3}, lambda: optax.adan(1e-3, b1=0.98, b2=0.92, b3=0.99, weight_decay=0.0)),
  ('adopt', {'lr': 1e-3}, lambda: optax.contrib.adopt(1e-3, b2=0.9999, eps=1e-6)),
  ('nadamw', {'lr': 1e-3}, lambda: optax.nadamw(1e-3, weight_decay=0.0)),
)


def section_timm(p: dict) -> list[dict]:
  """Each timm ID's update + apply against Optax's transformation of the same algorithm, interleaved."""
  shapes = p['timm_shapes']
  params = {f'w{i}': jnp.full(s, 0.5, jnp.float32) for i, s in enumerate(shapes)}
  grads = {k: jnp.full(v.shape, 0.01, jnp.float32) for k, v in params.items()}
  n_params = sum(x.size for x in jax.tree.leaves(params))
  rows = []
  for name, kwargs, optax_tx in TIMM_VS_OPTAX:
    log(f'timm: timm.{name} vs optax ({n_params} parameters)')
    pair = {'optax': optax_tx(), f'timm.{name}': jaxsched.optimizer(f'timm.{name}', **kwargs)}
    holders = {}
    for label, tx in pair.items():
      v = Variant(label, tx)
      state_shape = timing.shape_of(jax.eval_shape(v.init, params))
      compiled, _ = timing.compile_step(v.step, (timing.shape_of(params), state_shape, timing.shape_of(grads)))
      pp = jax.tree.map(jnp.copy, params)
      holders[label] = Holder(compiled, pp, jax.jit(v.init)(pp), grads)
    res = timing.interleaved(holders, p['repeats'], sync={n: h.block for n, h in holders.items()})
    base = res['optax']['median']
    for label in pair:
      rows.append(
        {
          'optimizer': name,
          'variant': label,
          'params': n_params,
          'step': res[label],
          'ratio': res[label]['median'] / base,
        }
      )
  return rows


# ---------------------------------------------------------------- main

DEFAULT_SECTIONS = '1,3,4,5,6,7,8'


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--quick', action='store_true', help='tiny sizes: a smoke run in seconds')
  ap.add_argument('--out', default=HERE, help='folder for RESULTS.md and results.json')
  ap.add_argument('--sections', default=DEFAULT_SECTIONS, help='which sections to run (1 includes 2)')
  ap.add_argument('--no-diagnose', action='store_true', help='skip the diagnostic variants')
  ap.add_argument('--merge', action='append', default=[], help="another run's results.json to import")
  ap.add_argument('--sizes', default=None, help="e.g. 10x1000000,1000x10000 (default: the plan's)")
  ap.add_argument('--render-only', action='store_true', help='rewrite RESULTS.md from results.json')
  args = ap.parse_args(argv)
  argv = argv if argv is not None else sys.argv[1:]
  os.makedirs(args.out, exist_ok=True)
  json_path = os.path.join(args.out, 'results.json')
  md_path = os.path.join(args.out, 'RESULTS.md')
  allres = {'runs': {}}
  if os.path.exists(json_path):
    with open(json_path) as f:
      allres = json.load(f)
  findings = os.path.join(HERE, 'FINDINGS.md')  # the hand-written analysis of the committed results
  if os.path.exists(findings) and os.path.abspath(args.out) == HERE:
    with open(findings) as f:
      allres['notes'] = f.read()
  for m in args.merge:
    with open(m) as f:
      allres['runs'].update(json.load(f).get('runs', {}))
  if not args.render_only:
    sections = {s.strip() for s in args.sections.split(',')}
    p = plan(args.quick)
    run: dict[str, Any] = {'meta': meta(argv), 'plan': {k: v for k, v in p.items()}, 'quick': args.quick}
    t0 = time.perf_counter()
    cache: dict = {}
    if run['meta']['backend'] == 'gpu' and not args.quick:
      p['copy_elems'] = 1 << 28
    if args.sizes:
      p['sizes'] = [tuple(int(x) for x in s.split('x')) for s in args.sizes.split(',')]
    run['meta']['timing'] = (
      'steps dispatched back to back, one wait per sample (as a training loop); each sample >= 20 ms of steps'
    )
    log('device', run['meta']['device'], '| machine', run['meta']['machine'])
    key = run['meta']['backend'] + ('-quick' if args.quick else '') + (f'-{args.sizes}' if args.sizes else '')
    if not args.quick and sections != set(DEFAULT_SECTIONS.split(',')):  # a part: its own entry, the full run kept
      key += '-sections-' + '-'.join(sorted(sections))
    allres['runs'][key] = run
    steps = [
      ('1', 'train_step', lambda: section_train_step(p, not args.no_diagnose, cache)),
      ('3', 'torch', lambda: section_torch(p, cache)),
      ('4', 'schedules', lambda: section_schedules(p)),
      ('5', 'recompiles', lambda: section_recompiles(p)),
      ('6', 'memory', section_memory),
      ('7', 'bandwidth', lambda: section_bandwidth(p, run.get('train_step', []))),
      ('8', 'wrappers', lambda: section_wrappers(p)),
      ('9', 'timm', lambda: section_timm(p)),
    ]
    order = [s.strip() for s in args.sections.split(',')]
    for number, name, fn in sorted(steps, key=lambda t: order.index(t[0]) if t[0] in order else 99):
      if number in sections:
        run[name] = fn()
        run['meta']['wall_s'] = time.perf_counter() - t0
        save(allres, json_path, md_path)  # a run stopped part-way keeps what it measured
    try:
      run['meta']['load_average_end'] = list(os.getloadavg())
    except OSError:
      pass
  save(allres, json_path, md_path)
  log(f'wrote {md_path} and {json_path}')
  return 0


def save(allres: dict, json_path: str, md_path: str) -> None:
  with open(json_path, 'w') as f:
    json.dump(allres, f, indent=1, default=str)
  with open(md_path, 'w') as f:
    f.write(R.render(allres))


if __name__ == '__main__':
  sys.exit(main())
