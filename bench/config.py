"""Run configurations: the profiles, the defaults and where each number comes from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from bench.errors import BenchError
from models.presets import AUTHOR_PRESETS, DISCRIMINATORS, INITS, NETS, PRESETS

# RunConfig fields added after the first records were published, with the value those records implicitly
# used: a config read from such a record gets them (bench.records), so old and new runs of one setting compare equal.
ADDED_DEFAULTS = {"dtype": "float32", "recipe": "described", "nets": "table2", "init": "torch", "capacity_form": "batch",
                  "c_schedule": "linear", "c_step": 0.5, "disc": "kim-mnih", "perm_batch": "independent",
                  "last_batch": "drop", "reduction": "mean"}
# A latent dimension is active when its mean KL exceeds this many nats (it then carries information).
ACTIVE_KL = 0.01


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers. Its hash is the run id."""

    model: str
    dataset: str
    seed: int
    epochs: int = 50  # paper, Figure 3: "after training 50 epochs"
    batch_size: int = 64  # Kim & Mnih (2018), appendix: batch 64
    lr: float = 1e-4  # Kim & Mnih (2018): VAE Adam lr 1e-4
    beta1: float = 0.9  # Adam defaults (Kingma & Ba 2015), as in Kim & Mnih (2018)
    beta2: float = 0.999
    z_dim: int = 20  # paper, section 5.1: "latent representations z of 20 dimensions"
    w_kl: float = 1.0  # objective coefficients: filled from models.presets.PRESETS
    w_cap: float = 0.0
    gamma: float = 0.0
    c_max: float = 25.0  # Burgess et al. (2018): C rises to 25 nats
    c_ramp: int = 0  # updates over which C rises; 0 = the whole run (paper: "gradually increased")
    d_lr: float = 1e-4  # Kim & Mnih (2018): discriminator Adam lr 1e-4, betas (0.5, 0.9)
    d_beta1: float = 0.5
    d_beta2: float = 0.9
    train_subset: int = 0  # first N training images; 0 = all
    test_subset: int = 0  # first M test images; 0 = all
    dtype: str = "float32"  # float type of weights and activations; float64 for the exact regression check
    # Where the defaults come from (RECIPES); the knobs below are the ways the author's code differs.
    recipe: str = "described"
    nets: str = "table2"  # models.presets.NETS: Table 2's widths and logits, or the author's code's
    init: str = "torch"  # models.presets.INITS: current torch's default initialisation, or torch 0.4's
    capacity_form: str = "batch"  # models.objectives.capacity_gap: |mean KL - C|, or mean |KL_i - C|
    c_schedule: str = "linear"  # C rises linearly over updates (c_max, c_ramp), or by c_step per epoch
    c_step: float = 0.5  # nats per epoch of the staircase schedule
    disc: str = "kim-mnih"  # models.presets.DISCRIMINATORS
    perm_batch: str = "independent"  # D's permuted batch: another batch, or the same images after the VAE step
    last_batch: str = "drop"  # an epoch's last partial batch: dropped, or kept as a smaller update
    reduction: str = "mean"  # the VAE's gradient is of the batch mean, or of the batch sum

    @property
    def run_id(self) -> str:
        values = dataclasses.asdict(self)
        # Fields added after records were first published enter the hash only when they differ from
        # their default, so runs recorded before the field existed keep their ids and stay "done".
        for key, default in ADDED_DEFAULTS.items():
            if values[key] == default:
                del values[key]
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        return cls(**values)


DTYPES = ("float32", "float64")
# The string fields and their choices: --set takes only these.
CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": DTYPES,
    "recipe": ("described", "author"),
    "nets": NETS,
    "init": INITS,
    "capacity_form": ("batch", "sample"),
    "c_schedule": ("linear", "staircase"),
    "disc": DISCRIMINATORS,
    "perm_batch": ("independent", "same"),
    "last_batch": ("drop", "keep"),
    "reduction": ("mean", "sum"),
}

# The two ways to reproduce the paper, as defaults under the objective presets (docs/recipes.md).
# "described": the paper's text, with Kim & Mnih's (2018) and Burgess et al.'s (2018) settings where
# it is silent: the RunConfig defaults. "author": the paper's public code as it ran
# (githubgreat886/controllable-factorVAE, torch 0.4), each value from the line of it named.
RECIPES: dict[str, dict] = {
    "described": {},
    "author": {
        "batch_size": 128,  # main.py argparse --batch-size default 128; the DataLoader keeps the last, partial batch
        "last_batch": "keep",
        "lr": 1e-3,  # --lr default 1e-3; optim.Adam(model.parameters(), args.lr), default betas
        "d_lr": 1e-3,  # optim.Adam(D.parameters(), args.lr): the same lr and default betas for D
        "d_beta1": 0.9,
        "d_beta2": 0.999,
        "nets": "author",  # models.py, class VAE
        "init": "torch0.4",  # README: torch 0.4, whose reset_parameters drew the initial weights
        "capacity_form": "sample",  # controlled_vae_loss: torch.abs(kld.sum(1) - C), summed over the batch
        "c_schedule": "staircase",  # process_cvae, process_fvae: C = epoch/2 for the epoch's updates and its test pass
        "c_step": 0.5,
        "disc": "author",  # models.py, class Discriminator
        "perm_batch": "same",  # process_fvae: z_prim = model(images) again after optimizer.step()
        "reduction": "sum",  # every loss uses size_average=False: the gradient is of the batch sum
    },
}
RECIPE_PRESETS = {"described": PRESETS, "author": AUTHOR_PRESETS}

# Profiles change only how much is trained, never the objective.
PROFILES: dict[str, dict] = {
    # The paper's setting: full MNIST, 50 epochs.
    "paper": {},
    # The 5 x 5 MNIST matrix in 11 minutes on 2 CPU cores (measured, BENCHMARKS.md).
    "quick": {"epochs": 5, "train_subset": 10_000, "test_subset": 2_000},
    # Seconds per run: tests and CI.
    "smoke": {"epochs": 2, "train_subset": 256, "test_subset": 128},
}

# Sample counts of the disentanglement metrics per profile, as overrides of bench.eval.metrics.MetricCounts,
# whose defaults (disentanglement_lib's) the paper profile keeps. Those encode about a million images
# per run (15,000 FactorVAE votes of 64); the smaller profiles cut the counts with the training.
METRIC_COUNTS: dict[str, dict] = {
    "paper": {},
    "quick": {"n_train": 5_000, "n_test": 2_000, "factorvae_n_train": 500, "factorvae_n_eval": 250,
              "factorvae_n_variance": 5_000},
    # Ten boosting rounds: DCI's trees, most of a smoke run's scoring, in a tenth of the time.
    "smoke": {"n_train": 500, "n_test": 200, "factorvae_batch_size": 32, "factorvae_n_train": 100,
              "factorvae_n_eval": 50, "factorvae_n_variance": 500, "dci_rounds": 10},
}
# The seed of the metrics' own generator: every run is scored on the same samples and votes.
METRIC_SEED = 0

# Keys that --set may change; model, dataset, seed and recipe come from their own options.
# Fields the runs of one stack share: they fix the shapes, the batches and the optimisers. The
# others (seed, objective coefficients, C schedule, initialisation) may differ within a stack.
STACK_FIELDS = ("dataset", "epochs", "batch_size", "lr", "beta1", "beta2", "z_dim", "d_lr", "d_beta1", "d_beta2",
                "train_subset", "test_subset", "dtype", "nets", "disc", "perm_batch", "last_batch", "capacity_form",
                "reduction")


def stack_key(config: RunConfig) -> tuple:
    """Runs with equal keys can be trained as one stack (and whether it has a discriminator)."""
    return tuple(getattr(config, name) for name in STACK_FIELDS) + (config.gamma != 0,)


SETTABLE = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in ("model", "dataset", "seed", "recipe"))
_TYPES = {f.name: f.type for f in dataclasses.fields(RunConfig)}
# The most --set takes of the sizes nothing else bounds: a network is built from z_dim, and a run of
# epochs past these never ends. Both lie far beyond the paper's 20 latents and 50 epochs. The batch
# size is bounded by the training images a run meets (bench.plan.check_fits_data).
LIMITS = {"epochs": 100_000, "z_dim": 4096}


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict:
    """Turn ``key=value`` strings into typed overrides; raise BenchError on an unknown key or bad value."""
    overrides: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise BenchError(f"--set {pair!r}: expected key=value, e.g. --set gamma=10")
        if key not in SETTABLE:
            raise BenchError(f"--set {key}: unknown key; settable keys are {', '.join(SETTABLE)}")
        kind = _TYPES[key]
        if kind == "str":
            if text not in CHOICES[key]:
                raise BenchError(f"--set {key}={text}: choose from {', '.join(CHOICES[key])}")
            overrides[key] = text
            continue
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise BenchError(f"--set {key}={text}: not a valid {kind}") from None
        if not math.isfinite(value):
            raise BenchError(f"--set {key}={text}: must be a finite number")
        if key in ("epochs", "batch_size", "z_dim") and value < 1:
            raise BenchError(f"--set {key}={text}: must be at least 1")
        if key in LIMITS and value > LIMITS[key]:
            raise BenchError(f"--set {key}={text}: at most {LIMITS[key]:,}")
        if key in ("lr", "d_lr") and value <= 0:
            raise BenchError(f"--set {key}={text}: must be positive")
        if key in ("c_ramp", "train_subset", "test_subset", "c_max", "c_step") and value < 0:
            raise BenchError(f"--set {key}={text}: must be 0 or more")
        if key in ("beta1", "beta2", "d_beta1", "d_beta2") and not 0 <= value < 1:
            raise BenchError(f"--set {key}={text}: must be in [0, 1)")
        overrides[key] = value
    return overrides


def resolve(model: str, dataset: str, seed: int, profile: str, overrides: dict | None = None,
            recipe: str = "described") -> RunConfig:
    """Defaults, then the recipe's, then the objective's preset in that recipe, then the profile, then the overrides."""
    if recipe not in RECIPES:
        raise BenchError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    presets = RECIPE_PRESETS[recipe]
    if model not in presets:
        raise BenchError(f"unknown model {model!r} in the {recipe} recipe; choose from all, {', '.join(presets)}")
    if profile not in PROFILES:
        raise BenchError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    values = {"recipe": recipe, **RECIPES[recipe], **dataclasses.asdict(presets[model])}
    values.update(PROFILES[profile])
    values.update(overrides or {})
    return RunConfig(model=model, dataset=dataset, seed=seed, **values)
