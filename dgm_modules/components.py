"""The registries: short names for every model, objective, optimiser, module and method.

Adding a component is one ``register`` line here; adding a method is one ``MethodPreset``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dgm_modules.methods.adversarial import AdversarialMethod
from dgm_modules.methods.semi_supervised import SemiSupervisedMethod
from dgm_modules.methods.variational import VariationalMethod
from dgm_modules.models.gan import GAN, VAEGAN
from dgm_modules.objectives.adversarial import GANLoss, VAEGANLoss
from dgm_modules.objectives.perceptual import PerceptualELBO
from dgm_modules.models.dp_mixture_vae import DPMixtureVAE
from dgm_modules.models.gaussian_vae import GaussianVAE
from dgm_modules.models.hierarchical_vae import HierarchicalGaussianVAE
from dgm_modules.models.m2 import M2
from dgm_modules.models.sbn import SigmoidBeliefNet
from dgm_modules.models.stick_breaking_vae import StickBreakingVAE
from dgm_modules.models.linear_gaussian import LinearGaussian
from dgm_modules.objectives.elbo import ELBO
from dgm_modules.objectives.iwae import IWAEBound
from dgm_modules.objectives.reweighted_wake_sleep import ReweightedWakeSleep
from dgm_modules.objectives.score_function import ScoreFunction
from dgm_modules.objectives.semi_supervised import SemiSupervisedELBO
from dgm_modules.objectives.vimco import VIMCO
from dgm_modules.objectives.wake_sleep import WakeSleep
from dgm_modules.objectives.arm import ARM
from dgm_modules.objectives.disarm import DisARM
from dgm_modules.objectives.dreg import DReG
from dgm_modules.objectives.relax import RELAX
from dgm_modules.objectives.stl import STL
from dgm_modules.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("gaussian-vae")(GaussianVAE)
MODELS.register("hierarchical-vae")(HierarchicalGaussianVAE)
MODELS.register("sbn")(SigmoidBeliefNet)
MODELS.register("m2")(M2)
MODELS.register("stick-breaking-vae")(StickBreakingVAE)
MODELS.register("dp-mixture-vae")(DPMixtureVAE)
MODELS.register("linear-gaussian")(LinearGaussian)
MODELS.register("gan")(GAN)
MODELS.register("vae-gan")(VAEGAN)

OBJECTIVES: Registry = Registry("objective")
OBJECTIVES.register("elbo")(ELBO)
OBJECTIVES.register("iwae")(IWAEBound)
OBJECTIVES.register("wake-sleep")(WakeSleep)
OBJECTIVES.register("rws")(ReweightedWakeSleep)
OBJECTIVES.register("score-function")(ScoreFunction)
OBJECTIVES.register("vimco")(VIMCO)
OBJECTIVES.register("semi-supervised-elbo")(SemiSupervisedELBO)
OBJECTIVES.register("gan")(GANLoss)
OBJECTIVES.register("vae-gan")(VAEGANLoss)
OBJECTIVES.register("perceptual")(PerceptualELBO)
# modern low-variance estimators (issue 10)
OBJECTIVES.register("stl")(STL)
OBJECTIVES.register("dreg")(DReG)
OBJECTIVES.register("arm")(ARM)
OBJECTIVES.register("disarm")(DisARM)
OBJECTIVES.register("relax")(RELAX)

OPTIMIZERS: Registry = Registry("optimizer")
for _name, _cls in {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}.items():
    OPTIMIZERS.register(_name)(_cls)

MODULES: Registry = Registry("module")
MODULES.register("variational")(VariationalMethod)
MODULES.register("semi-supervised")(SemiSupervisedMethod)
MODULES.register("adversarial")(AdversarialMethod)


@dataclass(frozen=True)
class MethodPreset:
    """A named method: which module trains which model with which objective (all overridable)."""

    description: str
    model: Any
    objective: Any
    module: Any = "variational"
    optimizer: Any = field(default_factory=lambda: {"class_path": "adam", "init_args": {"lr": 1e-3}})
    citation: str = ""


METHODS: Registry = Registry("method")
METHODS.register("vae")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE trained by the reparameterised ELBO (analytic KL)", "gaussian-vae", "elbo",
    citation="Kingma & Welling 2014"))
METHODS.register("iwae")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE trained by the importance-weighted bound L_5", "gaussian-vae",
    {"class_path": "iwae", "init_args": {"k": 5}}, citation="Burda, Grosse & Salakhutdinov 2016"))
METHODS.register("vae-2l")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE with two stochastic layers (100 and 50 units), Monte Carlo ELBO", "hierarchical-vae", "elbo",
    citation="Burda, Grosse & Salakhutdinov 2016"))
METHODS.register("iwae-2l")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE with two stochastic layers (100 and 50 units) trained by L_5", "hierarchical-vae",
    {"class_path": "iwae", "init_args": {"k": 5}}, citation="Burda, Grosse & Salakhutdinov 2016"))
METHODS.register("sb-vae")(MethodPreset(  # type: ignore[arg-type]
    "Stick-breaking VAE: Kumaraswamy posterior, GEM(alpha0) prior, ELBO with the exact KL by quadrature "
    "(model.kl_terms=10: the paper's truncated series)",
    "stick-breaking-vae", "elbo", citation="Nalisnick & Smyth 2017"))
METHODS.register("dp-vae")(MethodPreset(  # type: ignore[arg-type]
    "VAE with a learned truncated DP-mixture-of-Gaussians prior, Monte Carlo ELBO", "dp-mixture-vae", "elbo",
    citation="Goyal et al. 2017 (one-level simplification)"))
_GAN_ADAM = {"class_path": "adam", "init_args": {"lr": 2e-4, "betas": [0.5, 0.999]}}
METHODS.register("gan")(MethodPreset(  # type: ignore[arg-type]
    "GAN, MLP generator and discriminator, non-saturating generator loss; scored by FID/KID only",
    "gan", "gan", module="adversarial", optimizer=_GAN_ADAM, citation="Goodfellow et al. 2014"))
METHODS.register("dcgan")(MethodPreset(  # type: ignore[arg-type]
    "GAN with DCGAN-style conv generator and discriminator, non-saturating loss; FID/KID only",
    {"class_path": "gan", "init_args": {"arch": "dcgan"}}, "gan", module="adversarial", optimizer=_GAN_ADAM,
    citation="Goodfellow et al. 2014; Radford et al. 2016"))
METHODS.register("vae-gan")(MethodPreset(  # type: ignore[arg-type]
    "VAE-GAN: conv nets, reconstruction in a discriminator layer plus the GAN loss, balanced "
    "encoder/decoder/discriminator updates",
    "vae-gan", "vae-gan", module="adversarial", optimizer=_GAN_ADAM, citation="Larsen et al. 2016"))
METHODS.register("vae-perceptual")(MethodPreset(  # type: ignore[arg-type]
    "Gaussian VAE with the reconstruction measured in the suite classifier's feature space",
    "gaussian-vae", "perceptual", citation="Dosovitskiy & Brox 2016"))

# -- sigmoid belief nets (a linear SBN 200-200 by default) and discrete latents (issue 3) ------
_NVIL = {"class_path": "score-function",
         "init_args": {"input_baseline": True, "centering": True, "variance_normalization": True}}
_GUMBEL = {"temperature": 1.0, "temperature_min": 0.5, "anneal_rate": 3e-5}
for _name, _desc, _model, _objective, _cite in [
    ("sbn-ws", "SBN 200-200 trained by wake-sleep", "sbn", "wake-sleep", "Hinton, Dayan, Frey & Neal 1995"),
    ("sbn-rws", "SBN 200-200 trained by reweighted wake-sleep (k=5, wake-phase q update)", "sbn",
     {"class_path": "rws", "init_args": {"k": 5}}, "Bornschein & Bengio 2015"),
    ("sbn-reinforce", "SBN 200-200, score-function (REINFORCE) ELBO gradients, no variance reduction", "sbn",
     "score-function", "Williams 1992"),
    ("sbn-nvil", "SBN 200-200, NVIL: score function with input baseline, centring, variance normalisation",
     "sbn", _NVIL, "Mnih & Gregor 2014"),
    ("sbn-vimco", "SBN 200-200 trained by VIMCO on L_5 (leave-one-out baselines)", "sbn",
     {"class_path": "vimco", "init_args": {"k": 5}}, "Mnih & Rezende 2016"),
    ("sbn-gumbel", "SBN 200-200 with a Gumbel-softmax / Concrete relaxed q (annealed), ELBO", 
     {"class_path": "sbn", "init_args": {"relaxation": "concrete", **_GUMBEL}}, "elbo",
     "Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017"),
    ("sbn-gumbel-st", "SBN 200-200 with straight-through Gumbel-softmax gradients, ELBO",
     {"class_path": "sbn", "init_args": {"relaxation": "straight-through", **_GUMBEL}}, "elbo",
     "Jang, Gu & Poole 2017"),
    ("sbn-st", "SBN 200-200, ELBO with the plain straight-through gradient (hard sample forward, its mean's gradient back)",
     {"class_path": "sbn", "init_args": {"relaxation": "straight-through-mean"}}, "elbo",
     "Bengio, Leonard & Courville 2013"),
    ("vae-sleep", "Gaussian VAE, ELBO plus a sleep-phase update of q on dreamed samples", "gaussian-vae",
     {"class_path": "elbo", "init_args": {"sleep_weight": 1.0}}, "Hu, Yang, Salakhutdinov & Xing 2017"),
]:
    METHODS.register(_name)(MethodPreset(_desc, _model, _objective, citation=_cite))  # type: ignore[arg-type]
METHODS.register("m2")(MethodPreset(  # type: ignore[arg-type]
    "M2 semi-supervised VAE: y summed out exactly for unlabelled data, plus classification (set "
    "data.labelled_fraction)", "m2", "semi-supervised-elbo", module="semi-supervised",
    citation="Kingma, Rezende, Mohamed & Welling 2014"))

# -- modern low-variance estimators (issue 10) ---------------------------------------------------
_SBN_1 = {"class_path": "sbn", "init_args": {"latent_sizes": [200]}}
for _name, _desc, _model, _objective, _cite in [
    ("vae-stl", "Gaussian VAE, ELBO with the sticking-the-landing (path-derivative) gradient", "gaussian-vae",
     "stl", "Roeder, Wu & Duvenaud 2017"),
    ("iwae-dreg", "Gaussian VAE, L_5 with doubly-reparameterised inference-network gradients (IWAE-DReG)",
     "gaussian-vae", {"class_path": "dreg", "init_args": {"k": 5}}, "Tucker, Lawson, Gu & Maddison 2019"),
    ("rws-dreg", "Gaussian VAE, reweighted wake-sleep (k=5) with the doubly-reparameterised wake-phi update",
     "gaussian-vae", {"class_path": "dreg", "init_args": {"k": 5, "alpha": 1.0}}, "Tucker, Lawson, Gu & Maddison 2019"),
    ("sbn-arm", "SBN 200-200, ELBO with ARM gradients (antithetic pairs, layer by layer)", "sbn", "arm",
     "Yin & Zhou 2019"),
    ("sbn-disarm", "SBN 200-200, ELBO with DisARM gradients (ARM with the uniform integrated out)", "sbn",
     "disarm", "Dong, Mnih & Tucker 2020"),
    ("sbn-relax", "SBN 200 (one layer), ELBO with RELAX gradients (REBAR term plus a learned network)",
     _SBN_1, "relax", "Grathwohl, Choi, Wu, Roeder & Duvenaud 2018"),
    ("sbn-rebar", "SBN 200 (one layer), ELBO with REBAR gradients (learned eta and temperature)", _SBN_1,
     {"class_path": "relax", "init_args": {"hidden": 0}}, "Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017"),
]:
    METHODS.register(_name)(MethodPreset(_desc, _model, _objective, citation=_cite))  # type: ignore[arg-type]
