"""Every code block of the README and the docs runs, so no example goes stale.

The ```python blocks of one page run in order in one namespace, in a scratch directory (where the
repository's examples/ is linked, so pages may name its configs). The ```bash and ```console lines that
call ``jaxsched ...`` run through the command's entry point and must exit 0. A block preceded by
``<!-- no-run -->`` is an illustrative fragment and is skipped; there are few, and the count is held
here. Also: the API reference documents every name of ``jaxsched.__all__``, the README stays a front
page, and its quick-start test command is what ``.ci/run`` installs and runs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import jax
import pytest

import jaxsched
from jaxsched.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]
NO_RUN = '<!-- no-run -->'
MAX_NO_RUN = 4  # fragments that cannot run (each says why); keep it small
FENCE = re.compile(r'^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$', re.M | re.S)


def blocks(page: Path) -> list[tuple[str, str, bool]]:
  """(language, code, runnable) of each fenced block of ``page``, in order."""
  text = page.read_text(encoding='utf-8')
  out = []
  for m in FENCE.finditer(text):
    before = text[: m.start()].rstrip().splitlines()
    skipped = bool(before) and before[-1].strip() == NO_RUN
    body = '\n'.join(line[len(m['indent']) :] for line in m['body'].splitlines())
    out.append((m['lang'], body, not skipped))
  return out


def name(page: Path) -> str:
  return str(page.relative_to(ROOT))


def commands(code: str) -> list[list[str]]:
  """The ``jaxsched ...`` command lines of a shell block, comments dropped."""
  out = []
  for line in code.splitlines():
    line = line.strip().removeprefix('$ ')
    if line.startswith('jaxsched '):
      out.append(shlex.split(line, comments=True)[1:])
  return out


@pytest.fixture
def scratch(tmp_path, monkeypatch):
  (tmp_path / 'examples').symlink_to(ROOT / 'examples')
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  x64 = jax.config.jax_enable_x64
  yield tmp_path
  jax.config.update('jax_enable_x64', x64)


PYTHON_PAGES = [p for p in PAGES if any(lang == 'python' and run for lang, _, run in blocks(p))]
TORCH_CODE = re.compile(r'^(?:import|from)\s+(?:torch|pytorch_lightning)\b', re.M)


def page_param(page: Path):
  """``page`` as a parameter, marked ``torch`` (left out of the fast lane, tests/conftest.py) where its code
  imports torch or Lightning."""
  needs_torch = any(lang == 'python' and run and TORCH_CODE.search(code) for lang, code, run in blocks(page))
  return pytest.param(page, id=name(page), marks=[pytest.mark.torch] if needs_torch else [])


SHELL_PAGES = [p for p in PAGES if any(lang in ('bash', 'console') and commands(c) for lang, c, _ in blocks(p))]


@pytest.mark.parametrize('page', [page_param(p) for p in PYTHON_PAGES])
def test_python_blocks_run(page, scratch):
  namespace: dict = {'__name__': f'docs_{page.stem}'}
  for i, (lang, code, run) in enumerate(blocks(page)):
    if lang == 'python' and run:
      exec(compile(code, f'{name(page)} (python block {i})', 'exec'), namespace)


@pytest.mark.parametrize('page', SHELL_PAGES, ids=name)
def test_jaxsched_commands_run(page, scratch, capsys):
  for lang, code, run in blocks(page):
    if lang in ('bash', 'console') and run:
      for argv in commands(code):
        assert cli_main(argv) == 0, f'{name(page)}: jaxsched {shlex.join(argv)}\n{capsys.readouterr().err}'


def test_pages_have_examples_and_few_fragments():
  assert PYTHON_PAGES and SHELL_PAGES
  fragments = [name(p) for p in PAGES for _, _, run in blocks(p) if not run]
  assert len(fragments) <= MAX_NO_RUN, fragments
  # a marker must sit right before a fence, where blocks() sees it
  markers = sum(p.read_text(encoding='utf-8').count(NO_RUN) for p in PAGES)
  assert markers == len(fragments)


def test_api_reference_documents_every_public_name():
  text = '\n'.join(p.read_text(encoding='utf-8') for p in (ROOT / 'docs' / 'api').glob('*.md'))
  documented = set(re.findall(r'^::: jaxsched\.(\w+)\s*$', text, re.M))
  assert set(jaxsched.__all__) <= documented, sorted(set(jaxsched.__all__) - documented)


def test_readme_is_a_front_page_whose_test_command_ci_runs():
  readme = (ROOT / 'README.md').read_text(encoding='utf-8')
  assert len(readme.splitlines()) <= 150
  ci = (ROOT / '.ci' / 'run').read_text(encoding='utf-8')
  quick = [c for lang, c, _ in blocks(ROOT / 'README.md') if lang == 'bash' and '-m pytest' in c]
  assert len(quick) == 1, quick
  # the README's test command: venv, install, pytest; .ci/run runs the same steps, then builds the docs
  steps = [s.strip() for s in quick[0].strip().split('&&')]
  for step in steps:
    assert step in ci, f'.ci/run does not run the README step {step!r}'
  assert '.venv/bin/mkdocs build --strict' in ci and 'mkdocs serve' in readme
  assert os.access(ROOT / '.ci' / 'run', os.X_OK)
