"""The optimisers a config may name by short name (``optimizer.class_path: adam``)."""
from __future__ import annotations

import torch

from dgm_modules.registry import OPTIMIZERS

for _name, _cls in {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}.items():
    OPTIMIZERS.register(_name)(_cls)
