"""The benchmark runner keeps working: `benchmarks/run.py --quick` at tiny sizes.

No timing is asserted (benchmarks are not tests): only that the runner finishes
and writes RESULTS.md and results.json with every section.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_writes_every_section(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  proc = subprocess.run(
    [sys.executable, os.path.join(ROOT, 'benchmarks', 'run.py'), '--quick', '--out', str(tmp_path)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  md = (tmp_path / 'RESULTS.md').read_text()
  for heading in (
    '## Runs',
    '## 1–2. Train step and compile time',
    '## 3. Against torch',
    '## 4. Schedule evaluation',
    '## 5. Recompiles',
    '## 6. Optimizer-state bytes',
    '## 7. Bandwidth',
    '## 8. Training-loop wrappers',
  ):
    assert heading in md, heading
  assert 'jax ' in md and 'optax ' in md and 'torch ' in md  # versions in the header
  runs = json.loads((tmp_path / 'results.json').read_text())['runs']
  (run,) = runs.values()
  for section in ('train_step', 'torch', 'schedules', 'recompiles', 'memory', 'bandwidth', 'wrappers'):
    assert run[section], section
  scenarios = {(r['scenario'], r['role']) for r in run['train_step']}
  for scenario in ('one_group', 'groups_schedule', 'groups_plateau'):
    assert (scenario, 'jaxsched') in scenarios and (scenario, 'baseline') in scenarios
  assert {r['shapes'] for r in run['train_step']} == {'same', 'distinct'}
  # kernel counts are facts too: fusions equal but for names share one kernel, which leaves of one
  # shape allow and leaves of distinct shapes do not
  for r in run['train_step']:
    assert 0 < r['fusions']['distinct'] <= r['fusions']['total'], r
  same = [r for r in run['train_step'] if r['shapes'] == 'same' and r['leaves'] == 12]
  assert same and all(r['fusions']['distinct'] < r['fusions']['total'] for r in same)
  # each wrapper is compared with a hand-written one that computes the same numbers (a fact, not a timing)
  roles = {(r['wrapper'], r['role']) for r in run['wrappers']}
  for wrapper in ('accumulation', 'ema', 'swa'):
    assert (wrapper, 'jaxsched') in roles and (wrapper, 'baseline') in roles
  for r in run['wrappers']:
    if r['role'] != 'reference':
      assert r['max_rel_diff']['params'] <= 1e-6, r
      assert r['wrapper'] == 'accumulation' or r['max_rel_diff']['average'] <= 1e-6, r
  # an EMA updated after every step is the update itself, not a lax.cond around it: the hand-written
  # step's kernels and the step counter's
  (ema,) = [r['fusions'] for r in run['wrappers'] if r['wrapper'] == 'ema' and r['role'] == 'jaxsched']
  (hand,) = [r['fusions'] for r in run['wrappers'] if r['wrapper'] == 'ema' and r['role'] == 'baseline']
  assert ema['conditional'] == 0 and ema['total'] <= hand['total'] + 1 and ema['copy'] <= hand['copy'], (ema, hand)
  # the recompile counts are facts, not timings: a plateau or a schedule never recompiles
  assert all(r['compiles_after_first'] == 0 for r in run['recompiles']), run['recompiles']
