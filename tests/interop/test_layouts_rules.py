"""jaxsched.interop.layouts without torch (the fast lane): Flax's names and axis orders for torch's parameter names,
round-trips of each layout change (tests/test_torch_state.py moves real torch modules' tensors)."""

import numpy as np
import pytest

from jaxsched import ConfigError
from jaxsched.interop.layouts import CONV, DENSE, SAME, as_rule, flax_rule, leaf_paths, with_overrides


def test_flax_rule_names_and_layouts():
  assert flax_rule('features.0.weight', 4) == ('features/0/kernel', CONV)  # nn.Conv2d -> nn.Conv
  assert flax_rule('head.weight', 2) == ('head/kernel', DENSE)  # nn.Linear -> nn.Dense
  assert flax_rule('bn.weight', 1) == ('bn/scale', SAME)
  assert flax_rule('bn.running_var', 1) == ('bn/var', SAME)
  assert flax_rule('bn.num_batches_tracked', 0) is None
  assert flax_rule('gate', 2) == ('gate', SAME)  # not in the table: its name, dots as slashes, and its axes
  assert flax_rule('a.b.gate', 3) == ('a/b/gate', SAME)


@pytest.mark.parametrize('layout, shape, jax_shape', [(DENSE, (3, 5), (5, 3)), (CONV, (8, 2, 3, 4), (3, 4, 2, 8))])
def test_layout_changes_round_trip(layout, shape, jax_shape):
  x = np.arange(np.prod(shape)).reshape(shape)
  y = layout.to_jax(x)
  assert y.shape == jax_shape
  np.testing.assert_array_equal(layout.to_torch(y), x)
  # torch's (out, in) weight is Flax's (in, out) kernel: the same number at transposed indices
  assert y[(1, 0) if layout is DENSE else (0, 1, 1, 2)] == x[(0, 1) if layout is DENSE else (2, 1, 0, 1)]
  assert DENSE.swaps_last_two(2) and not CONV.swaps_last_two(4) and SAME.keeps_axes(3)


def test_rules_from_overrides_and_bad_rules():
  rule = as_rule({'embed.weight': ('embed/embedding', SAME)})
  assert rule('embed.weight', 2) == ('embed/embedding', SAME) and rule('fc.weight', 2) == ('fc/kernel', DENSE)
  assert as_rule(None) is flax_rule
  assert with_overrides({'x': None})('x', 1) is None
  with pytest.raises(ConfigError, match='rule=3 must be a function'):
    as_rule(3)


def test_leaf_paths_are_slash_names():
  assert sorted(leaf_paths({'a': {'kernel': 1, 'bias': 2}, 'b': [3]})) == ['a/bias', 'a/kernel', 'b/0']
