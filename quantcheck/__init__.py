"""quantcheck: a numerics harness for quantized ``torch.compile`` code, and the stack it checks.

Installed, the distribution's import names are all under ``quantcheck``, so that they cannot
collide with a project's own packages (``impl`` and ``harness`` are common names):

- ``quantcheck.impl``      the quantization stack (the repository's ``impl/`` folder):
                           ``from quantcheck.impl.schemes import quantize_linear_``
- ``quantcheck.harness``   the pytest plugin (``harness/``), loaded by the ``pytest11`` entry point
- ``python -m quantcheck`` every suite of the current project, then the summary table

In a checkout of the repository the folders are also importable by their own names (``impl``,
``harness``); :mod:`quantcheck.names` keeps each module one module under both.
"""

from . import names

names.install()
