"""DisARM: antithetic gradients with the uniform integrated out (Dong, Mnih & Tucker 2020)."""
from __future__ import annotations

from torch import Tensor

from dgm_modules.objectives import functional as F
from dgm_modules.objectives.arm import ARM
from dgm_modules.registry import OBJECTIVES


@OBJECTIVES.register("disarm")
class DisARM(ARM):
    """ARM's antithetic pairs, layer by layer, with ARM's per-pair estimate replaced by its
    expectation over the uniform given the pair
    (:func:`~dgm_modules.objectives.functional.disarm_coefficients`): unbiased, and never of
    higher variance than ARM (Rao-Blackwellisation). Everything else as :class:`ARM`.

    Args:
        k: independent antithetic pairs per example, averaged.
    """

    def coefficients(self, f: Tensor, f_anti: Tensor, u: Tensor, b: Tensor, b_anti: Tensor,
                     logits: Tensor) -> Tensor:
        return F.disarm_coefficients(f, f_anti, b, b_anti, logits)
