"""The diversity experiment: how different are several outputs for one input, and at what cost?

The pix2pix paper found that its generator ignores input noise and that test-time dropout gives only
minor stochasticity. This package measures that, side by side with methods built to diversify, on
one protocol: train (or reuse) each variant of a recipe, draw K samples for each of N test inputs
with the variant's samplers, and score diversity (against the same measures on pairs of real
targets) and quality (against the target). ``i2i diversity RECIPE`` runs it; see docs/diversity.md.

The package is also the Python entry point: ``i2i.diversity("recipe.toml")`` runs
:func:`i2i.diversity.api.run_diversity` and returns its :class:`~i2i.diversity.api.DiversityResult`.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from i2i.diversity.api import run_diversity

        return run_diversity(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
