"""timm names that are not ``timm.<name>`` IDs, each with why: :data:`UNPORTED`.

timm's registry (``timm.optim.list_optimizers()``) also names optimizers that jaxsched does
not port, and names for torch.optim's classes. An unknown ``timm.<name>`` that is one of these
gets the reason, or the ID to use, instead of the nearest name alone.
"""

from __future__ import annotations

_RANDOM = (
  'draws at random from host generators on each step (which steps update the preconditioner, the probe '
  'vectors), whose sequence a jit-compiled step would have to replay'
)
_TORCH = "timm.{name} is timm's name for torch.optim.{cls} with timm's defaults{extra}: use optimizer {cls}{kwargs}"
_KERNEL = "timm.{name} is {lib}'s CUDA kernel for {algo}, not timm's own optimizer: use {id}"

UNPORTED: dict[str, str] = {
  **{
    f'timm.{name}': (
      f'timm.{name} (timm.optim.Kron, PSGD with Kronecker-factored preconditioners) {_RANDOM}; it is not ported'
    )
    for name in ('kron', 'kronw', 'kronc')
  },
  **{
    f'timm.{name}': _TORCH.format(name=name, cls=cls, extra=extra, kwargs=kwargs)
    for name, cls, extra, kwargs in (
      ('sgd', 'SGD', ' (nesterov=True, momentum=0.9)', ' with optimizer_kwargs {nesterov: true, momentum: 0.9}'),
      ('nesterov', 'SGD', ' (nesterov=True, momentum=0.9)', ' with optimizer_kwargs {nesterov: true, momentum: 0.9}'),
      ('momentum', 'SGD', ' (momentum=0.9)', ' with optimizer_kwargs {momentum: 0.9}'),
      ('adam', 'Adam', '', ''),
      ('adamw', 'AdamW', ' (weight_decay=0)', ' with optimizer_kwargs {weight_decay: 0}'),
      ('adamax', 'Adamax', '', ''),
      ('adadelta', 'Adadelta', '', ''),
      ('adagrad', 'Adagrad', ' (eps=1e-8)', ' with optimizer_kwargs {eps: 1.0e-8}'),
      ('nadam', 'NAdam', '', ''),
      ('radam', 'RAdam', '', ''),
      ('radamw', 'RAdam', ' (decoupled_weight_decay=True)', ' with optimizer_kwargs {decoupled_weight_decay: true}'),
      ('rmsprop', 'RMSprop', ' (alpha=0.9, momentum=0.9)', ' with optimizer_kwargs {alpha: 0.9, momentum: 0.9}'),
    )
  },
  **{
    f'timm.{name}': _KERNEL.format(name=name, lib=lib, algo=algo, id=id_)
    for name, lib, algo, id_ in (
      ('bnbadam', 'bitsandbytes', 'Adam', 'Adam'),
      ('bnbadamw', 'bitsandbytes', 'AdamW', 'AdamW'),
      ('bnbsgd', 'bitsandbytes', 'SGD', 'SGD with optimizer_kwargs {nesterov: true} (timm passes it)'),
      ('bnblion', 'bitsandbytes', 'Lion', 'timm.lion'),
      ('fusedadam', 'apex', 'Adam', 'Adam'),
      ('fusedadamw', 'apex', 'AdamW', 'AdamW'),
      ('fusedsgd', 'apex', 'SGD', 'SGD with optimizer_kwargs {nesterov: true} (timm passes it)'),
      ('fusedlamb', 'apex', 'LAMB', 'timm.lamb'),
      (
        'fusednovograd',
        'apex',
        'NovoGrad',
        'timm.novograd with optimizer_kwargs {betas: [0.95, 0.98]} (timm passes them)',
      ),
    )
  },
  **{
    f'timm.{name}': (
      f"timm.{name} is bitsandbytes' CUDA optimizer {algo}, not timm's own; its 8-bit or AdEMAMix state has no "
      'timm counterpart here, and it is not ported'
    )
    for name, algo in (
      ('bnbadam8bit', 'Adam8bit'),
      ('bnbadamw8bit', 'AdamW8bit'),
      ('bnbsgd8bit', 'SGD8bit'),
      ('bnblion8bit', 'Lion8bit'),
      ('bnbademamix', 'AdEMAMix'),
      ('bnbademamix8bit', 'AdEMAMix8bit'),
    )
  },
}
"""``timm.<name>`` -> why it is not an ID (and what to use)."""
