"""RESULTS.md from results.json: one column group per device run, side by side."""

from __future__ import annotations

from typing import Any, Callable

TARGET_STEP, TARGET_COMPILE, TARGET_BW = 1.05, 1.2, 0.85


def _ms(r: dict | None) -> str:
  if not r:
    return '—'
  return f'{r["median"] * 1e3:.3g} ({r["p25"] * 1e3:.3g}–{r["p75"] * 1e3:.3g})'


def _x(v: float | None, target: float | None = None) -> str:
  if v is None:
    return '—'
  mark = '' if target is None else (' ✓' if v <= target else ' ✗')
  return f'{v:.3f}{mark}'


def _table(header: list[str], rows: list[list[str]]) -> str:
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return '\n'.join(out) + '\n'


def _side_by_side(
  runs: dict[str, dict],
  section: str,
  key: Callable[[dict], tuple],
  label: list[str],
  cols: list[tuple[str, Callable[[dict], str]]],
) -> str:
  """Rows matched by key across runs; each run contributes its own columns."""
  names = [n for n in runs if runs[n].get(section)]
  if not names:
    return '_not run_\n'
  order: list[tuple] = []
  by: dict[str, dict[tuple, dict]] = {}
  for n in names:
    by[n] = {}
    for r in runs[n][section]:
      k = key(r)
      by[n][k] = r
      if k not in order:
        order.append(k)
  header = label + [f'{c} [{n}]' for n in names for c, _ in cols]
  rows = []
  for k in order:
    row = [str(x) for x in k]
    for n in names:
      r = by[n].get(k)
      row += [f(r) if r else '—' for _, f in cols]
    rows.append(row)
  return _table(header, rows)


def _header(runs: dict[str, dict]) -> str:
  out = []
  for n, run in runs.items():
    m = run['meta']
    v = m['versions']
    out.append(
      f'- **{n}** — {m["date"]}; code {m.get("code", "not recorded")}; device **{m["device"]}**; '
      f'machine {m["machine"]}; '
      f'torch on {m.get("torch_device", "cpu")} with {m["torch_threads"]} threads; '
      f'load average at start {", ".join(f"{x:.1f}" for x in m.get("load_average_start", []))}; '
      f'run took {m.get("wall_s", 0):.0f} s; `{m["command"]}`; timing: '
      f'{m.get("timing", "one wait after every step (host dispatch latency included)")}\n'
      f'  - python {v["python"]}, jax {v["jax"]}, jaxlib {v["jaxlib"]}, optax {v["optax"]}, flax {v["flax"]}, '
      f'torch {v["torch"]}, jaxsched {v["jaxsched"]}, numpy {v["numpy"]}'
    )
  return '\n'.join(out) + '\n'


def _size(r: dict) -> str:
  return f'{r["leaves"]} leaves' + (', distinct shapes' if r.get('shapes') == 'distinct' else '')


def _findings(runs: dict[str, dict]) -> str:
  out = []
  for n, run in runs.items():
    lines = []
    ts = [r for r in run.get('train_step', []) if r['role'] == 'jaxsched']
    if ts:
      met = [r for r in ts if r['ratio'] <= TARGET_STEP]
      worst = max(ts, key=lambda r: r['ratio'])
      lines.append(
        f'train step: jaxsched/hand-written {min(r["ratio"] for r in ts):.3f}–{worst["ratio"]:.3f}; '
        f'target ≤ {TARGET_STEP} met in {len(met)}/{len(ts)} (worst: {worst["scenario"]}, '
        f'{_size(worst)})'
      )
      cm = [r for r in ts if r['compile_ratio'] <= TARGET_COMPILE]
      worst_c = max(ts, key=lambda r: r['compile_ratio'])
      lines.append(
        f'compile: jaxsched/hand-written {min(r["compile_ratio"] for r in ts):.3f}–'
        f'{worst_c["compile_ratio"]:.3f}; target ≤ {TARGET_COMPILE} met in {len(cm)}/{len(ts)} '
        f'(worst: {worst_c["scenario"]}, {_size(worst_c)})'
      )
      control = [r for r in run['train_step'] if r['role'] == 'control']
      if control:
        lines.append(
          'A/A control (the hand-written step compiled twice; the noise floor): step '
          + ', '.join(f'{r["ratio"]:.3f}' for r in control)
          + '; compile '
          + ', '.join(f'{r["compile_ratio"]:.3f}' for r in control)
        )
      naive = [r for r in run['train_step'] if r['role'] == 'reference']
      if naive:
        lines.append(
          'naive multi_transform around whole Adams / hand-written: '
          + ', '.join(f'{r["ratio"]:.3f} ({_size(r)})' for r in naive)
        )
    tr = [r for r in run.get('torch', []) if r['variant'] == 'jax: jaxsched.build' and 'vs_torch' in r]
    if tr:
      lines.append(
        'torch step time / jaxsched step time (>1: jaxsched faster): '
        + '; '.join(
          f'{r["optimizer"]} {r["leaves"]} leaves: ' + ', '.join(f'{k} {v:.2f}' for k, v in r['vs_torch'].items())
          for r in tr
        )
      )
    rc = run.get('recompiles', [])
    if rc:
      lines.append(
        'recompiles after the first compile: '
        + ', '.join(f'{r["compiles_after_first"]} ({r["config"]}, {r["distinct_lr_settings"]} LR settings)' for r in rc)
      )
    wr = [r for r in run.get('wrappers', []) if r['role'] == 'jaxsched']
    if wr:
      met = [r for r in wr if r['ratio'] <= TARGET_STEP]
      lines.append(
        'wrappers (train step / hand-written): '
        + ', '.join(f'{r["wrapper"]} {r["model"]} {r["ratio"]:.3f}' for r in wr)
        + f'; target ≤ {TARGET_STEP} met in {len(met)}/{len(wr)}; A/A control '
        + ', '.join(f'{r["ratio"]:.3f}' for r in run['wrappers'] if r['role'] == 'control')
      )
    tm = [r for r in run.get('timm', []) if r['variant'] != 'optax']
    if tm:
      met = [r for r in tm if r['ratio'] <= TARGET_STEP]
      lines.append(
        "timm's optimizers (step / Optax's same algorithm): "
        + ', '.join(f'{r["variant"]} {r["ratio"]:.3f}' for r in tm)
        + f'; target ≤ {TARGET_STEP} met in {len(met)}/{len(tm)}'
      )
    bw = run.get('bandwidth')
    if bw:
      lines.append(
        f'copy bandwidth {bw["copy_GBps"]:.1f} GB/s; Adam achieved/copy: '
        + ', '.join(
          f'{a["variant"]} {a["leaves"]} leaves {a["fraction_of_copy"]:.2f}'
          for a in bw['adam']
          if not a['variant'].startswith('diag: jaxsched')
        )
      )
    out.append(f'- **{n}**: ' + '\n  - '.join([''] + lines))
  return '\n'.join(out) + '\n'


def render(allres: dict[str, Any]) -> str:
  runs = allres.get('runs', {})
  md = [
    '# jaxsched benchmark results\n',
    'Written by `python benchmarks/run.py` (see its docstring). Every time is a median over interleaved '
    'repeats, with the p25–p75 range in brackets; every ratio divides two figures of the same run. '
    'Columns marked [cpu] / [gpu] come from the run on that device (the device is named below).\n',
    '## Runs\n',
    _header(runs),
  ]
  notes = allres.get('notes')
  if notes:
    md += ['## Findings (analysis)\n', notes.strip() + '\n']
  md += ['## Findings (generated from the numbers)\n', _findings(runs)]

  md += [
    '## 1–2. Train step and compile time: jaxsched.build vs hand-written Optax\n',
    'Optimizer step alone (grads given), `update + apply_updates` in one jit with params and state donated. '
    '"ratio" = variant / hand-written (same scenario, size and run); target ≤ 1.05 for steps, ≤ 1.2 for '
    'compile (trace + lower + XLA compile, a fresh jit each time). "fusions" = kernels launched per step in the '
    'optimized HLO; "distinct" = how many of them differ other than by name, the kernels XLA compiles '
    '(it reuses one for equal fusions, which it can only do for leaves of one shape). "shapes": all leaves '
    'of one shape, or no two alike (sizes 10⁶ − 8i). The control row compiles the hand-written step a '
    'second time: its distance from 1 is the noise floor of the run. Rows marked diag take jaxsched apart '
    '(see benchmarks/variants.py).\n',
    _side_by_side(
      runs,
      'train_step',
      lambda r: (r['scenario'], r['leaves'], r.get('shapes', 'same'), r['variant']),
      ['scenario', 'leaves', 'shapes', 'variant'],
      [
        ('step ms', lambda r: _ms(r['step'])),
        ('ratio', lambda r: _x(r['ratio'], TARGET_STEP if r['role'] == 'jaxsched' else None)),
        ('compile s (n)', lambda r: f'{r["compile_s"]["total"]["median"]:.2f} ({r["compile_s"]["total"]["n"]})'),
        ('trace+lower s', lambda r: f'{r["compile_s"]["trace"]["median"] + r["compile_s"]["lower"]["median"]:.2f}'),
        ('compile ratio', lambda r: _x(r['compile_ratio'], TARGET_COMPILE if r['role'] == 'jaxsched' else None)),
        ('fusions / distinct', lambda r: f'{r["fusions"].get("total", "?")} / {r["fusions"].get("distinct", "?")}'),
      ],
    ),
    '\n## 3. Against torch (same config and parameter count)\n',
    'torch for-loop is `foreach=False` (what DynVision\'s `fused: False` gives on a CPU). "× vs torch fused" = '
    'this step time / torch fused step time (<1: faster than torch fused). Torch steps without a scheduler.\n',
    _side_by_side(
      runs,
      'torch',
      lambda r: (r['optimizer'], r['leaves'], r['variant']),
      ['optimizer', 'leaves', 'variant'],
      [
        ('step ms', lambda r: _ms(r.get('step')) if 'step' in r else r.get('error', '—')),
        ('× vs torch fused', lambda r: _x(r.get('ratio_to_fused'))),
      ],
    ),
    "\n## 4. Schedule evaluation: a curve through jit(vmap) vs stepping torch's scheduler\n",
    'torch is timed over the steps shown and extrapolated to the full curve (its cost per step is flat). '
    '"max rel diff" compares the curves over the torch steps.\n',
    _side_by_side(
      runs,
      'schedules',
      lambda r: (r['schedule'], r['steps']),
      ['schedule', 'steps'],
      [
        ('jax ms', lambda r: _ms(r['jax_s'])),
        ('jax compile s', lambda r: f'{r["jax_compile_s"]:.2f}'),
        ('torch µs/step', lambda r: f'{r["torch_per_step_s"] * 1e6:.1f} ({r["torch_steps_timed"]} steps)'),
        ('torch s (extrapolated)', lambda r: f'{r["torch_extrapolated_s"]:.1f}'),
        ('speedup', lambda r: f'{r["speedup"]:.0f}×'),
        ('max rel diff', lambda r: f'{r["max_rel_diff_vs_torch"]:.1e}'),
      ],
    ),
    '\n## 5. Recompiles over a training run\n',
    'XLA compiles counted through jax.monitoring (backend compile events) and traces of the step through a '
    'Python counter; "after first" counts compiles after the first 10 steps and the first report.\n',
    _side_by_side(
      runs,
      'recompiles',
      lambda r: (r['config'], r['steps']),
      ['config', 'steps'],
      [
        ('compiles total', lambda r: str(r['compiles_total'])),
        ('compiles after first', lambda r: str(r['compiles_after_first'])),
        ('traces of step', lambda r: str(r['traces_of_step'])),
        ('distinct LR settings', lambda r: str(r['distinct_lr_settings'])),
      ],
    ),
    '\n## 6. Optimizer-state bytes per parameter byte\n',
    'jaxsched: `jaxsched.optimizer(name)` (defaults) state, all leaves / array leaves only (hyperparameter and '
    'count scalars excluded); torch: `optimizer.state` tensors after one step (all / excluding 0-d step '
    'tensors); same parameter shapes (Muon: the 2-D ones).\n',
    _side_by_side(
      runs,
      'memory',
      lambda r: (r['optimizer'],),
      ['optimizer'],
      [
        (
          'jaxsched',
          lambda r: (
            f'{r["jaxsched"]:.3f} / {r["jaxsched_arrays"]:.3f}' if 'jaxsched' in r else r.get('jaxsched_error', '—')
          ),
        ),
        ('optax', lambda r: f'{r["optax"]:.3f}' if 'optax' in r else '—'),
        (
          'torch',
          lambda r: f'{r["torch"]:.3f} / {r["torch_arrays"]:.3f}' if 'torch' in r else r.get('torch_error', '—'),
        ),
      ],
    ),
  ]
  md += [
    '\n## 7. Bandwidth\n',
    'Copy bandwidth: `y = x * s` (s a traced scalar) on a large float32 array, donated so in place, '
    'bytes read + written per second. Adam: 7 × 4 bytes per parameter per step (read p, g, m, v; write p, m, v) '
    'over the median step time of section 1; target ≥ 0.85 of copy on a GPU.\n',
  ]
  bw_rows = {n: r['bandwidth'] for n, r in runs.items() if r.get('bandwidth')}
  if bw_rows:
    md.append(
      _table(
        ['run', 'copy elems', 'copy GB/s'],
        [[n, str(b['copy_elems']), f'{b["copy_GBps"]:.1f}'] for n, b in bw_rows.items()],
      )
    )
    md.append('\n')
    fake = {n: {'adam': b['adam']} for n, b in bw_rows.items()}
    md.append(
      _side_by_side(
        fake,
        'adam',
        lambda r: (r['leaves'], r['variant']),
        ['leaves', 'variant'],
        [
          ('GB/s', lambda r: f'{r["achieved_GBps"]:.1f}'),
          ('fraction of copy', lambda r: f'{r["fraction_of_copy"]:.2f}'),
        ],
      )
    )
  md += [
    '\n## 8. Training-loop wrappers: accumulation, EMA, SWA vs the same written by hand\n',
    'Whole train step of an MLP (5 dense layers, 10 leaves; `small`: 3,745 parameters, `4M`: 3,944,593), '
    'batch of 8: `grad + update + apply_updates` in one jit, params and state donated; time per micro-batch, '
    'median over interleaved samples of at least 50 ms, each a whole number of 8-micro-batch epochs. Inner '
    'optimizer on both sides: `jaxsched.build` of Adam at a constant LR, so a ratio is the wrapper alone. '
    'Hand-written: `optax.MultiSteps(inner, 4)`; an EMA of the params after each step (decay 0.999, the first '
    "update a copy, as torch's AveragedModel); SWA at each epoch's start in a `lax.cond`, the first a copy. "
    'jaxsched: the config with `accumulate_grad_batches: 4` (8 batches per epoch), `ema: {decay: 0.999}`, '
    '`swa: {swa_lrs: LR, swa_epoch_start: 1}` (8 batches per epoch). "max rel diff" compares params (and '
    'the average) with the hand-written after 16 micro-batches: the same numbers. Reference: the inner '
    'optimizer with no wrapper. "fusions / copies / cond" count kernels, copies and conditionals in the '
    'optimized HLO (outside branches). Target ≤ 1.05; the control (the hand-written step compiled again) '
    'is the noise floor; "ratio of minima" divides the fastest samples, less disturbed on a loaded machine. '
    'See benchmarks/wrappers.py.\n',
    _side_by_side(
      runs,
      'wrappers',
      lambda r: (r['wrapper'], r['model'], r['params'], r['variant']),
      ['wrapper', 'model', 'params', 'variant'],
      [
        ('step ms', lambda r: _ms(r['step'])),
        ('ratio', lambda r: _x(r['ratio'], TARGET_STEP if r['role'] == 'jaxsched' else None)),
        ('ratio of minima', lambda r: _x(r.get('ratio_min'))),
        ('compile s', lambda r: f'{r["compile_s"]:.2f}'),
        (
          'fusions / copies / cond',
          lambda r: (
            f'{r["fusions"].get("total", "?")} / {r["fusions"].get("copy", "?")} / '
            f'{r["fusions"].get("conditional", "?")}'
          ),
        ),
        (
          'max rel diff',
          lambda r: ', '.join(f'{k} {v:.1e}' for k, v in r['max_rel_diff'].items()) if r['max_rel_diff'] else '—',
        ),
      ],
    ),
    "\n## 9. timm's optimizers (timm.<name>, timm's numbers) vs Optax's same algorithm\n",
    '`update + apply_updates` in one jit, params and state donated, over 3 leaves of 1024 x 1024 and one of 1024 '
    "(3,146,752 parameters); the keywords make both sides the same algorithm (benchmarks/run.py's TIMM_VS_OPTAX); "
    'median over interleaved samples. Target ≤ 1.05.\n',
    _side_by_side(
      runs,
      'timm',
      lambda r: (r['optimizer'], r['params'], r['variant']),
      ['optimizer', 'params', 'variant'],
      [
        ('step ms', lambda r: _ms(r['step'])),
        ('ratio', lambda r: _x(r['ratio'], TARGET_STEP if r['variant'] != 'optax' else None)),
      ],
    ),
  ]
  return '\n'.join(md)
