"""The LightningModule of adversarial methods: one optimiser per player, manual optimisation.

Each training step gives every player of the objective (e.g. discriminator, then generator)
one update of its own loss, in the objective's order, as in Lightning's GAN example:
``toggle_optimizer`` freezes the other players, so a player's loss moves only its own
parameters. Models with a likelihood (the VAE-GAN) are also scored by the shared L_k
protocol; every model is scored by FID/KID of its samples.
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch import nn

from datamodules.base import Batch
from dgm_modules.evaluation.latent_structure import LatentStructureEvaluator
from dgm_modules.evaluation.log_likelihood import LogLikelihoodEvaluator
from dgm_modules.evaluation.reconstruction import ReconstructionAccuracyEvaluator
from dgm_modules.evaluation.sample_quality import SampleQualityEvaluator
from dgm_modules.methods.base import EvaluatedMethod, check_finite
from dgm_modules.methods.variational import OptimizerFactory
from dgm_modules.models.base import LatentVariableModel
from dgm_modules.objectives.adversarial import AdversarialObjective
from dgm_modules.registry import MODULES


@MODULES.register("adversarial")
class AdversarialMethod(EvaluatedMethod):
    """Trains ``model`` by an :class:`AdversarialObjective`, one optimiser per player.

    Args:
        model: a model with the players' networks (e.g. generator and discriminator).
        objective: the per-player losses; checked against the model here.
        optimizer: builds each player's optimiser from its parameters.
        fid_samples: images drawn for FID/KID against the test split at test end (0 = off).
        eval_k, val_k, chunk_pairs, eval_seed: the L_k evaluation, for models with a likelihood
            (ignored by implicit models such as the GAN).
        log_every_n_steps: also log the means of every n training batches (``train/<name>_step``);
            0: epoch means only (see :class:`~dgm_modules.methods.base.EvaluatedMethod`).
    """

    def __init__(self, model: nn.Module, objective: AdversarialObjective, optimizer: OptimizerFactory,
                 fid_samples: int = 10_000, eval_k: Sequence[int] = (1, 5000), val_k: Sequence[int] = (1,),
                 chunk_pairs: int = 4_096, eval_seed: int = 0, log_every_n_steps: int = 0) -> None:
        super().__init__(log_every_n_steps)
        if not isinstance(objective, AdversarialObjective):
            raise ValueError(f"module 'adversarial' needs an adversarial objective (gan, vae-gan), "
                             f"got {type(objective).__name__}")
        objective.check_model(model)
        self.automatic_optimization = False
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        has_likelihood = isinstance(model, LatentVariableModel)
        self.val_eval = LogLikelihoodEvaluator(val_k, chunk_pairs, eval_seed, "module.val_k") if has_likelihood else None
        self.test_eval = LogLikelihoodEvaluator(eval_k, chunk_pairs, eval_seed, "module.eval_k") if has_likelihood else None
        self.test_structure = LatentStructureEvaluator(seed=eval_seed) if has_likelihood else None
        self.sample_quality = SampleQualityEvaluator(fid_samples, seed=eval_seed) if fid_samples else None
        self.recon_accuracy = ReconstructionAccuracyEvaluator()

    def evaluators(self, stage: str) -> list:
        if stage == "val":
            return [self.val_eval] if self.val_eval is not None else []
        likelihood = [self.test_eval, self.test_structure] if self.test_eval is not None else []  # + active units
        quality = [self.sample_quality, self.recon_accuracy] if self.sample_quality is not None else []
        return likelihood + quality

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer_factory(self.objective.player_parameters(self.model, p)) for p in self.objective.players]

    def player_step(self, player: str, optimizer: L.pytorch.core.optimizer.LightningOptimizer,
                    x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of ``player`` on its own loss, the other players frozen; returns its terms."""
        self.toggle_optimizer(optimizer)
        out = self.objective(self.model, x, player)
        check_finite(out.loss, self.global_step)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(out.loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        return out.terms

    def simultaneous_step(self, optimizers: list, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All players' losses from one forward pass; each loss backpropagated into its own player's
        parameters only (``inputs=``), then the players the objective's balancing rule picks step."""
        out = self.objective.losses(self.model, x)
        chosen = self.objective.updates(out)
        for player, optimizer in zip(self.objective.players, optimizers):
            check_finite(out[player].loss, self.global_step)
            optimizer.zero_grad(set_to_none=True)
            if player in chosen:
                self.manual_backward(out[player].loss, inputs=list(self.objective.player_parameters(self.model, player)),
                                     retain_graph=True)
        values = {}
        for player, optimizer in zip(self.objective.players, optimizers):
            if player in chosen:
                optimizer.step()
            values[f"{player}_updated"] = torch.tensor(float(player in chosen), device=x.device)
        values.update(out[self.objective.players[-1]].terms)
        for player in self.objective.players[:-1]:
            values[f"{player}_loss"] = out[player].loss
        return values

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        if getattr(self.objective, "simultaneous", False):
            values = self.simultaneous_step(optimizers, batch.x)
        else:  # a later player's term of the same name wins (the generator's, as logged before)
            values = {}
            for player, optimizer in zip(self.objective.players, optimizers):
                values.update(self.player_step(player, optimizer, batch.x))
        self.record_train(values)  # the players' terms, summed on the device: logged as epoch means

