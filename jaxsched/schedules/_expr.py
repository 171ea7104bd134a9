"""lr_lambda expressions from config files, compiled to jnp without eval.

The grammar is a whitelist over Python's ``ast``: numbers, one variable
(``epoch``; ``x`` for CyclicLR's ``scale_fn``), ``+ - * / // % **``, unary
``+ -``, parentheses, ``pi``, and calls of ``min``, ``max``, ``abs``, ``exp``,
``log``, ``sqrt``, ``cos``, ``sin``. Anything else is a ConfigError that points
at the offending column.

Integer-valued subexpressions (the variable, integer literals, and ``+ - * // %``
of those) stay integers, as Python's ints would, so ``epoch // 30`` and
``epoch % 7`` are exact; ``/``, ``**`` and the functions give floats. As in
JAX, division by zero gives inf or nan instead of raising. An expression has at
most 1000 characters and 50 levels of nesting (:data:`MAX_LENGTH`, :data:`MAX_DEPTH`).
"""

from __future__ import annotations

import ast
import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsched._errors import ConfigError
from jaxsched.schedules import _numeric

_BINOPS = {
  ast.Add: '+',
  ast.Sub: '-',
  ast.Mult: '*',
  ast.Div: '/',
  ast.FloorDiv: '//',
  ast.Mod: '%',
  ast.Pow: '**',
}
_FUNCS = {
  'min': (2, None),
  'max': (2, None),
  'abs': (1, 1),
  'exp': (1, 1),
  'log': (1, 1),
  'sqrt': (1, 1),
  'cos': (1, 1),
  'sin': (1, 1),
}
_CONSTANTS = {'pi': math.pi}
_INT_OPS = {'+', '-', '*', '//', '%'}


@dataclasses.dataclass(frozen=True)
class Expression:
  """A compiled expression: ``fn(count) -> float array`` and its source.

  ``constant`` is the expression's value when it does not use the variable
  (computed with Python floats), else None.
  """

  source: str
  fn: Callable[[jax.Array], jax.Array]
  constant: float | None

  def __call__(self, n: jax.Array) -> jax.Array:
    return self.fn(n)


def _error(source: str, key: str, col: int | None, message: str) -> ConfigError:
  where = ''
  if col is not None:
    where = f'\n  {source}\n  {" " * col}^'
  return ConfigError(f'{key}={source!r}: {message}{where}')


MAX_LENGTH = 1000  # characters of one expression
MAX_DEPTH = 50  # operators and calls nested in one another


def _depth(tree: ast.AST) -> int:
  deepest, stack = 0, [(tree, 0)]
  while stack:
    node, depth = stack.pop()
    deepest = max(deepest, depth)
    stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
  return deepest


def compile_expression(source: str, key: str, variable: str = 'epoch') -> Expression:
  """Parses ``source`` with the whitelist above and returns an :class:`Expression`."""
  if not isinstance(source, str):
    raise ConfigError(f'{key}={source!r} must be an expression string.')
  text = source.strip()
  if len(text) > MAX_LENGTH:
    raise ConfigError(f'{key}: the expression has {len(text)} characters; at most {MAX_LENGTH} are read.')
  try:
    tree = ast.parse(text, mode='eval')
  except SyntaxError as e:
    col = (e.offset - 1) if e.offset else None
    raise _error(text, key, col, f'not a valid expression ({e.msg}).') from None
  except (RecursionError, MemoryError):
    raise _error(text, key, None, f'nested more than {MAX_DEPTH} levels deep.') from None
  if _depth(tree) > MAX_DEPTH:
    raise _error(text, key, None, f'nested more than {MAX_DEPTH} levels deep.')
  uses_variable = False

  def build(node):
    nonlocal uses_variable
    if isinstance(node, ast.Constant):
      if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise _error(text, key, node.col_offset, f'{node.value!r} is not a number.')
      value = node.value
      if isinstance(value, float) and not math.isfinite(value):
        raise _error(text, key, node.col_offset, 'this number overflows: it is not finite.')
      is_int = isinstance(value, int)
      return (lambda n, v=value, i=is_int: jnp.asarray(v, n.dtype if i else _numeric.float_dtype())), is_int, value
    if isinstance(node, ast.Name):
      if node.id == variable:
        uses_variable = True
        return (lambda n: n), True, None
      if node.id in _CONSTANTS:
        v = _CONSTANTS[node.id]
        return (lambda n, v=v: _numeric.const(v)), False, v
      raise _error(
        text, key, node.col_offset, f'unknown name {node.id!r}: the variable is {variable!r}; constants: pi.'
      )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
      f, is_int, v = build(node.operand)
      if isinstance(node.op, ast.UAdd):
        return f, is_int, v
      return (lambda n: -f(n)), is_int, (None if v is None else -v)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
      op = _BINOPS[type(node.op)]
      fa, ia, va = build(node.left)
      fb, ib, vb = build(node.right)
      is_int = ia and ib and op in _INT_OPS
      value = None
      if va is not None and vb is not None:
        try:
          value = _finite(_PY_OPS[op](va, vb))
        except (ZeroDivisionError, OverflowError, ValueError) as e:
          raise _error(text, key, node.col_offset, f'cannot evaluate ({e}).') from None
      jop = _JNP_OPS[op]
      if op == '**' and va is not None and vb is None and ib:
        # constant ** integer: exact-count power (no float32 rounding of the base amplified by n).
        def pw(n, a=float(va), fb=fb):
          m = fb(n)
          p = _numeric.power(a, jnp.abs(m))
          return jnp.where(m >= 0, p, 1.0 / p)

        return pw, False, value
      if op == '/' and vb:  # by a constant: times its reciprocal, as XLA computes it (see _numeric)
        return (lambda n, r=1.0 / vb: _float(fa(n)) * _numeric.const(r)), False, value
      if is_int:
        return (lambda n: jop(fa(n), fb(n))), True, value
      return (lambda n: jop(_float(fa(n)), _float(fb(n)))), False, value
    if isinstance(node, ast.Call):
      if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise _error(text, key, node.col_offset, f'unknown function {name!r}; allowed: {", ".join(_FUNCS)}.')
      name = node.func.id
      if node.keywords:
        raise _error(text, key, node.keywords[0].value.col_offset, f'{name}() takes no keyword arguments.')
      lo, hi = _FUNCS[name]
      if len(node.args) < lo or (hi is not None and len(node.args) > hi):
        want = f'{lo}' if lo == hi else f'at least {lo}'
        raise _error(text, key, node.col_offset, f'{name}() takes {want} argument(s), got {len(node.args)}.')
      parts = [build(a) for a in node.args]
      fns = [p[0] for p in parts]
      all_int = all(p[1] for p in parts)
      values = [p[2] for p in parts]
      value = None
      if all(v is not None for v in values):
        try:
          value = _PY_FUNCS[name](*values)
        except (ValueError, OverflowError) as e:
          raise _error(text, key, node.col_offset, f'cannot evaluate ({e}).') from None
      if name in ('min', 'max'):
        red = jnp.minimum if name == 'min' else jnp.maximum

        def f(n, fns=fns, red=red, all_int=all_int):
          out = fns[0](n) if all_int else _float(fns[0](n))
          for g in fns[1:]:
            out = red(out, g(n) if all_int else _float(g(n)))
          return out

        return f, all_int, value
      if name == 'abs':
        return (lambda n: jnp.abs(fns[0](n))), all_int, value
      jf = getattr(jnp, name)
      return (lambda n: jf(_float(fns[0](n)))), False, value
    col = getattr(node, 'col_offset', None)
    what = type(node).__name__
    if isinstance(node, ast.BinOp):
      what = type(node.op).__name__
      col = node.right.col_offset - 1 if hasattr(node.right, 'col_offset') else col
    raise _error(
      text,
      key,
      col,
      f'{what} is not allowed; use numbers, {variable!r}, + - * / // % **, parentheses, pi and {", ".join(_FUNCS)}().',
    )

  fn, _, value = build(tree.body)
  try:
    constant = None if uses_variable else float(value)
  except OverflowError as e:
    raise _error(text, key, None, f'cannot evaluate ({e}).') from None

  def compiled(n: jax.Array) -> jax.Array:
    return _float(fn(n))

  return Expression(text, compiled, constant)


def _finite(value: Any) -> Any:
  """value, or OverflowError for an inf or nan float (Python raises only for ``**``)."""
  if isinstance(value, float) and not math.isfinite(value):
    raise OverflowError(f'the result is {value}, not a finite number')
  return value


def _float(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(_numeric.float_dtype())


_PY_OPS = {
  '+': lambda a, b: a + b,
  '-': lambda a, b: a - b,
  '*': lambda a, b: a * b,
  '/': lambda a, b: a / b,
  '//': lambda a, b: a // b,
  '%': lambda a, b: a % b,
  '**': lambda a, b: float(a) ** b,
}
_JNP_OPS = {
  '+': jnp.add,
  '-': jnp.subtract,
  '*': jnp.multiply,
  '/': jnp.divide,
  '//': jnp.floor_divide,
  '%': jnp.remainder,
  '**': jnp.power,
}
_PY_FUNCS = {
  'min': min,
  'max': max,
  'abs': abs,
  'exp': math.exp,
  'log': math.log,
  'sqrt': math.sqrt,
  'cos': math.cos,
  'sin': math.sin,
}


def lambda_function(
  value: Any, key: str, variable: str = 'epoch'
) -> tuple[Callable[[jax.Array], jax.Array], float | None]:
  """A schedule factor from a config value: a callable (traced with the count),
  a number (a constant), or an expression string. Returns ``(fn, constant)``,
  constant being the factor's value when it is known not to depend on the count."""
  if isinstance(value, str):
    expr = compile_expression(value, key, variable)
    return expr.fn, expr.constant
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    try:
      c = _finite(float(value))
    except OverflowError:
      raise ConfigError(f'{key}={value!r} is not allowed: a number must be finite.') from None
    return (lambda n: jnp.full(jnp.shape(n), c, _numeric.float_dtype())), c
  if callable(value):
    return (lambda n: jnp.asarray(value(n)).astype(_numeric.float_dtype())), None
  raise ConfigError(
    f'{key}={value!r} is not allowed: expected a callable of the step, a number, or an '
    f'expression string in {variable!r} such as "0.95 ** {variable}".'
  )
