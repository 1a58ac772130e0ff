"""Learning-rate schedules a method can ask for by name (``module.lr_schedule``)."""
from __future__ import annotations

from typing import Callable

#: name -> (epoch -> factor on the optimiser's learning rate)
LR_SCHEDULES: dict[str, Callable[[int], float]] = {}


def iwae_passes(epoch: int) -> float:
    """Burda, Grosse & Salakhutdinov (2016, section 5): for i = 0..7, ``3**i`` passes over the data
    at ``10**(-i/7)`` times the initial rate (1e-3 in the paper): 3,280 passes in all, after which
    the last rate stays."""
    stage, end = 0, 1
    while epoch >= end and stage < 7:
        stage += 1
        end += 3**stage
    return 10 ** (-stage / 7)


LR_SCHEDULES["constant"] = lambda epoch: 1.0
LR_SCHEDULES["iwae"] = iwae_passes
