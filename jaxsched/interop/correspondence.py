"""torch's parameters matched to a JAX parameter tree, in the order torch keys its optimizer state.

torch keys its state by the parameter's index in its param groups, taken in order (regular,
recurrent, then ``lr_parameter_groups``, or timm's groups in timm's order, each in ``named_parameters()``
order; timm's frozen parameters in none);
:func:`jaxsched.torch_optimizer` builds them so. A name reaches its JAX parameter through a rule
(:mod:`jaxsched.interop.layouts`), and every per-parameter state gets its parameter's layout change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxsched._errors import ConfigError
from jaxsched.config import Config
from jaxsched.groups import group_paths, groups, uses_timm
from jaxsched.interop.layouts import Layout, Rule, leaf_paths, locate
from jaxsched.optimizers import OPTIMIZERS, _complex


@dataclasses.dataclass(frozen=True)
class Param:
  """One torch parameter: its index in torch's state dict, name, JAX path, layout and group."""

  index: int
  name: str
  path: str
  layout: Layout
  group: str


@dataclasses.dataclass(frozen=True)
class Correspondence:
  """torch's parameters in state-dict order, matched to the JAX tree."""

  params: tuple[Param, ...]
  groups: tuple[str, ...]
  # every torch name in named_parameters() order, each with its JAX path and layout, those in no group included
  named: tuple[tuple[str, str, Layout], ...]

  def by_path(self) -> dict[str, Param]:
    return {p.path: p for p in self.params}

  def in_group(self, name: str) -> list[Param]:
    return [p for p in self.params if p.group == name]


def correspondence(config: Config, params: Any, torch_names: Sequence[str], rule: Rule) -> Correspondence:
  """Matches torch's names to the JAX parameters and orders them as torch's param groups do.

  Raises:
    ConfigError: a name without a JAX parameter, two names for one, or a JAX parameter
      no name reaches.
  """
  if isinstance(torch_names, str) or not all(isinstance(n, str) for n in torch_names):
    raise ConfigError(
      f"torch_names must be the torch model's parameter names in named_parameters() order, got {torch_names!r}."
    )
  complex_params = _complex.complex_paths(params)
  if complex_params:
    raise ConfigError(
      f'complex parameters at {", ".join(complex_params)}: jaxsched keeps their optimizer state as '
      f'real views (a trailing axis of 2) where torch keeps complex tensors, and does not convert '
      f'those.'
    )
  by_path = leaf_paths(params)
  found = {name: locate(rule, name, by_path) for name in torch_names}
  taken: dict[str, str] = {}
  for name, (path, _) in found.items():
    if path in taken:
      raise ConfigError(f'torch parameters {taken[path]!r} and {name!r} both map to the JAX parameter {path!r}.')
    taken[path] = name
  missing = [p for p in by_path if p not in taken]
  if missing:
    raise ConfigError(f'the JAX parameters {", ".join(missing)} have no torch parameter among torch_names.')
  # the groups of the JAX paths in named_parameters() order, as torch_optimizer makes them (timm's depend on it)
  tree = {found[n][0]: by_path[found[n][0]] for n in torch_names}
  members = group_paths(config, tree)
  if uses_timm(config):
    _same_groups(members, group_paths(config, params))
  label = {path: group for group, taken in members.items() for path in taken}
  group_list = [g.name for g in groups(config, tree)]
  ordered = [(g, n) for g in group_list for n in torch_names if label[found[n][0]] == g]
  return Correspondence(
    tuple(Param(i, n, found[n][0], found[n][1], g) for i, (g, n) in enumerate(ordered)),
    tuple(group_list),
    tuple((n, *found[n]) for n in torch_names),
  )


def _same_groups(torch_side: dict[str, list[str]], jax_side: dict[str, list[str]]) -> None:
  """ConfigError where timm's groups of the JAX tree (in its own order, as :func:`jaxsched.build`
  reads it) differ from those of torch's ``named_parameters()`` order."""
  sets = {name: set(paths) for name, paths in torch_side.items()}
  if sets == {name: set(paths) for name, paths in jax_side.items()}:
    return
  moved = next(
    (p, g, h) for h, paths in jax_side.items() for p in paths for g, taken in sets.items() if p in taken and g != h
  )
  raise ConfigError(
    f"timm's groups depend on the parameters' order, and the JAX tree's puts {moved[0]} in {moved[2]} where "
    f"torch's named_parameters() order puts it in {moved[1]}: give the tree in torch's order (a Linen init, "
    f'not jitted), or name the layers with layer_groups.'
  )


def check_layouts(config: Config, corr: Correspondence, params: Any) -> None:
  """ConfigError where a layout change alters what the optimizer computes (the spec's
  ``check_layout``: Adafactor factors the last two dimensions, Muon reads the shape as
  torch's (out, in))."""
  check = OPTIMIZERS[config.optimizer].check_layout
  if check is None:
    return
  by_path = leaf_paths(params)
  group_kwargs = {g.name: g.optimizer_kwargs for g in groups(config, params)}
  for p in corr.params:
    check(p.layout, p.name, p.path, np.shape(by_path[p.path]), group_kwargs[p.group])
