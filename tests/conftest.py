import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=1')

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# float64 runs switch x64 on in a context (tests/oracle.py); the default stays off.
torch.set_num_threads(1)

settings.register_profile(
  'ci',
  max_examples=int(os.environ.get('JAXSCHED_HYPOTHESIS_EXAMPLES', '25')),
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow],
  derandomize=True,
)
settings.load_profile('ci')
