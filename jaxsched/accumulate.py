"""Lightning's micro-batch loop around an optimizer: gradient accumulation and skipped batches.

One call of ``update`` is one training batch (a micro-batch). Lightning 2.x
(``loops/training_epoch_loop.py``, ``loops/optimization/automatic.py``):

* every micro-batch's loss is divided by ``accumulate_grad_batches`` (N), also
  in a group cut short by the end of the epoch, and the gradients add up;
* the optimizer steps when ``(batch_idx + 1) % N == 0`` or on the epoch's last
  batch, ``batch_idx`` counting micro-batches within the epoch, so every epoch
  starts a new group and a partial last group still steps.

``optax.MultiSteps`` differs: it averages over the micro-batches seen, carries
a partial group into the next epoch, accumulates in float32 and, since it
resets its buffer as ``(1 - emit) * acc``, keeps a NaN forever. Here the buffer
has the gradients' dtype and is reset to zeros.

With ``skip_nonfinite``, a micro-batch whose gradient holds a NaN or an Inf is
dropped (it adds nothing; the group keeps its boundaries). An optimizer step
with nothing left to apply (every micro-batch of the group dropped, or an
accumulated sum that overflowed) is skipped as Lightning skips a batch whose
``training_step`` returns None: the optimizer's own state (moments, step
count) stays as it was, while the schedules move on, so the LR stays aligned
with epochs and batches.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks, state_tree
from jaxsched.stepping import steps_after


class AccumulateState(NamedTuple):
  """The micro-batch loop's state.

  Attributes:
    batch: micro-batches seen so far in the current epoch (Lightning's
      ``batch_idx`` of the next one).
    grads: the sum of the group's ``gradient / N`` so far (None when N is 1),
      in the gradients' dtype.
    kept: micro-batches of the current group that were not dropped.
    skipped: micro-batches dropped for non-finite gradients, over the run
      (:func:`jaxsched.skipped_steps`).
    inner_state: the optimizer's state.
  """

  batch: jax.Array
  grads: Any
  kept: jax.Array
  skipped: jax.Array
  inner_state: Any


def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def keep_schedules(ok: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where ``ok``; otherwise ``old``, except the hyperparameters and
  their counters (``optax.InjectStatefulHyperparamsState``), which take ``new``'s:
  a skipped optimizer step leaves the optimizer as it was and moves its schedules on."""
  is_inject = lambda x: isinstance(x, optax.InjectStatefulHyperparamsState)  # noqa: E731

  def pick(n, o):
    if is_inject(n):
      return n._replace(inner_state=keep_schedules(ok, n.inner_state, o.inner_state))
    return jnp.where(ok, n, o)

  return state_tree.replace(new, lambda x: is_inject(x) or state_tree.is_array(x), pick, old)


def accumulate(
  inner: optax.GradientTransformation,
  every: int = 1,
  batches_per_epoch: int | None = None,
  skip_nonfinite: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Lightning's ``accumulate_grad_batches`` (and jaxsched's ``skip_nonfinite``) around ``inner``.

  Args:
    inner: the optimizer, stepped once per group of micro-batches with the
      sum of their gradients divided by ``every``.
    every: Lightning's ``accumulate_grad_batches`` (N).
    batches_per_epoch: micro-batches per epoch (Lightning's
      ``num_training_batches``, ``len(train_loader)``); the optimizer also steps
      on an epoch's last micro-batch. None: groups of N run across epochs, as
      Lightning does for a loader without a length.
    skip_nonfinite: drop micro-batches whose gradient is not finite, and skip
      an optimizer step left with nothing finite to apply.

  Returns:
    A transformation whose ``update`` takes one micro-batch's gradient and
    returns zero updates except where the optimizer steps.
  """
  every = _checks.COUNT('accumulate_grad_batches', every)
  if batches_per_epoch is not None:
    batches_per_epoch = _checks.COUNT('batches_per_epoch', batches_per_epoch)
  inner = optax.with_extra_args_support(inner)
  period = every if batches_per_epoch is None else batches_per_epoch

  def init_fn(params):
    zero = lambda: jnp.zeros([], jnp.int32)  # noqa: E731  (one array per field, so the state can be donated)
    grads = jax.tree.map(jnp.zeros_like, params) if every > 1 else None
    return AccumulateState(batch=zero(), grads=grads, kept=zero(), skipped=zero(), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    finite = _all_finite(updates) if skip_nonfinite else jnp.array(True)
    if every > 1:
      scaled = jax.tree.map(lambda g: g / jnp.asarray(every, g.dtype), updates)  # Lightning: loss / N
      add = (lambda acc, g: jnp.where(finite, acc + g, acc)) if skip_nonfinite else jnp.add
      grads = jax.tree.map(add, state.grads, scaled)
    else:
      grads = updates
    emit = steps_after(state.batch, every, batches_per_epoch)
    kept = state.kept + finite.astype(jnp.int32)

    def step(_):
      new_updates, new_inner = inner.update(grads, state.inner_state, params, **extra_args)
      if skip_nonfinite:
        ok = (kept > 0) & _all_finite(grads)  # a sum of finite gradients can still overflow
        new_updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
        new_inner = keep_schedules(ok, new_inner, state.inner_state)
      return new_updates, new_inner

    if every > 1:
      shapes = jax.eval_shape(step, None)[0]
      hold = lambda _: (jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), state.inner_state)  # noqa: E731
      new_updates, inner_state = jax.lax.cond(emit, step, hold, None)
    else:
      new_updates, inner_state = step(None)
    reset = lambda x: jnp.where(emit, jnp.zeros_like(x), x)  # noqa: E731
    return new_updates, AccumulateState(
      batch=jnp.where(state.batch + 1 == period, 0, state.batch + 1),
      grads=jax.tree.map(reset, grads) if every > 1 else None,
      kept=reset(kept),
      skipped=state.skipped + (~finite).astype(jnp.int32),
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
