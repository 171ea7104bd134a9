"""Test-session setup, and the fast lane: ``python -m pytest --fast``.

The fast lane collects only the test modules that need neither torch (nor Lightning, transformers,
timm) nor a subprocess, so it runs in about a minute while the full suite (the CI gate) takes many.
Whether a module needs them is read from its source: a module is left out when it imports one of
``HEAVY_IMPORTS`` (``tests/oracle.py``, the torch oracle, is one of them), calls ``import_timm``, or
imports another test module that is left out. A test or a parameter that needs torch only indirectly
(a docs page that runs torch code) carries ``@pytest.mark.torch`` and is deselected. The fast lane then
fails any module or test that imports torch all the same, naming it, so none slips in unnoticed.
"""

import os
import re
import sys
from pathlib import Path

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=1')

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# float64 runs switch x64 on in a context (tests/oracle.py); the default stays off.
settings.register_profile(
  'ci',
  max_examples=int(os.environ.get('JAXSCHED_HYPOTHESIS_EXAMPLES', '25')),
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow],
  derandomize=True,
)
settings.load_profile('ci')

HEAVY_MODULES = ('torch', 'pytorch_lightning', 'lightning', 'transformers', 'timm')
HEAVY_IMPORTS = (*HEAVY_MODULES, 'oracle', 'subprocess')
NEEDS_HEAVY = re.compile(rf'^(?:import|from)\s+(?:{"|".join(HEAVY_IMPORTS)})\b|\bimport_timm\(|\bsubprocess\.', re.M)
TEST_IMPORT = re.compile(r'^\s*(?:import|from)\s+(test_\w+)\b', re.M)


def pytest_addoption(parser):
  parser.addoption(
    '--fast', action='store_true', help='the fast lane: only the tests that need neither torch nor a subprocess'
  )


def pytest_configure(config):
  config.addinivalue_line('markers', 'torch: needs torch, Lightning, transformers or timm (left out of --fast)')
  config.addinivalue_line('markers', 'slow: takes more than a few seconds (left out of --fast)')
  config.fast_lane_seen = {m for m in HEAVY_MODULES if m in sys.modules}


def needs_heavy(path: Path, root: Path) -> bool:
  """Whether the test module at ``path`` imports torch, Lightning, the oracle or subprocess, itself or
  through a test module it imports (looked up beside it, then in ``root``, as pytest's sys.path has them)."""
  source = path.read_text(encoding='utf-8')
  if NEEDS_HEAVY.search(source):
    return True
  for name in TEST_IMPORT.findall(source):
    found = [p for p in (path.parent / f'{name}.py', root / f'{name}.py') if p.is_file()]
    if found and needs_heavy(found[0], root):
      return True
  return False


def pytest_ignore_collect(collection_path, config):
  if config.getoption('fast') and collection_path.suffix == '.py' and collection_path.name.startswith('test_'):
    return needs_heavy(collection_path, Path(__file__).parent) or None
  return None


def pytest_collection_modifyitems(config, items):
  if config.getoption('fast'):
    heavy = [item for item in items if item.get_closest_marker('torch') or item.get_closest_marker('slow')]
    config.hook.pytest_deselected(items=heavy)
    items[:] = [item for item in items if item not in heavy]


def newly_heavy(config) -> list[str]:
  """The torch-like modules imported since the last look (none, in a fast lane that holds)."""
  new = sorted(m for m in HEAVY_MODULES if m in sys.modules and m not in config.fast_lane_seen)
  config.fast_lane_seen.update(new)
  return new


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
  report = yield
  if (
    collector.config.getoption('fast')
    and isinstance(collector, pytest.Module)
    and (new := newly_heavy(collector.config))
  ):
    report.outcome = 'failed'
    report.longrepr = f'--fast: importing {collector.path} imported {new}; see tests/conftest.py'
  return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
  yield
  if item.config.getoption('fast') and (new := newly_heavy(item.config)):
    raise AssertionError(f'--fast: this test imported {new}; mark it @pytest.mark.torch (see tests/conftest.py)')
