"""build()'s optimizer on a device mesh and across processes gives the single-device result."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

SCRIPT = pathlib.Path(__file__).with_name('distributed_train.py')


def run(*args, env=None, timeout=300):
  proc = subprocess.run(
    [sys.executable, str(SCRIPT), *args],
    capture_output=True,
    text=True,
    timeout=timeout,
    env={**os.environ, **(env or {})},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_params(a, b, rtol):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)


def _leaves(tree):
  if isinstance(tree, dict):
    return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
  return [np.asarray(tree)]


def test_mesh_data_parallel_and_fsdp_on_8_host_devices():
  single = run('single')
  mesh = run('mesh', env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  for layout in ('data_parallel', 'fsdp'):
    got = mesh[layout]
    assert got['devices'] == 8
    assert got['sharding_ok'] and got['leaves_checked'] > 20
    assert got['lr'] == single['lr']
    assert_same_params(got['params'], single['params'], rtol=1e-12)
  assert mesh['fsdp']['final_param_sharding'] == "P('data',)"
  # the plateau cut the LR after each epoch's report: 0.01 -> 0.005, recurrent 0.001 -> 0.0005
  assert single['lr'] == {'regular': 0.005, 'recurrent': 0.0005}


def test_two_processes_under_jax_distributed():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = str(s.getsockname()[1])
  procs = [
    subprocess.Popen(
      [sys.executable, str(SCRIPT), 'process', port, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  assert outs[0] == outs[1]  # identical in both processes
  assert outs[0]['processes'] == 2 and outs[0]['devices'] == 2
  assert_same_params(outs[0]['params'], run('single')['params'], rtol=1e-12)
