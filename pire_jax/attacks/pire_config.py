"""Settings of the PIRE attack and its named presets.

Budgets and step sizes are in grey levels of the RGB image (0..255 scale), per channel.
`pire.py` optimises in ImageNet-normalised units (grey levels / (255 * std_c)), the
released code's units, and feeds the network through its `InputConvention`.
"""

import dataclasses
from typing import Sequence

from pire_jax.models.input_convention import IMAGENET_STD_RGB

LOOP_MODES = ("auto", "python", "fori", "scan")

# Released PIRE code (liuzrcc/PIRE): eps = 10/255 and Adam lr = 1e-4, both in
# ImageNet-normalised units, i.e. per channel 10 * std_c and 0.0255 * std_c grey levels.
PAPER_EPS_NORMALISED = 10.0 / 255.0
PAPER_LEARNING_RATE_NORMALISED = 1e-4
PAPER_STEPS = 500


def normalised_to_grey_levels(value: float) -> tuple[float, float, float]:
    """Express a value in ImageNet-normalised units as RGB grey levels (value * 255 * std_c)."""
    return tuple(value * 255.0 * std for std in IMAGENET_STD_RGB)


@dataclasses.dataclass(frozen=True)
class PireConfig:
    """Settings of one PIRE run; hashable, so it can be a static argument of `jax.jit`.

    Attributes:
      steps: number of Adam iterations T.
      eps: L-infinity budget of the perturbation v, in grey levels, per RGB channel.
      learning_rate: Adam step size in grey levels, per RGB channel.
      save_steps: iterations after which v is kept (the last must equal `steps`);
        one run of 500 steps with save_steps (200, 500) yields both results.
      adam_b1, adam_b2, adam_eps: Adam hyper-parameters (optax defaults, which the
        released code shares with PyTorch).
      clip_to_valid_range: also project x + v into 0..255 after every step. The
        released code never does (its x + v can leave the valid range).
      initial_fraction_of_eps: v0 is drawn uniform in [-f * eps, f * eps]; the
        released code uses f = 1. v0 = 0 would stall the attack, because the
        objective's gradient vanishes there.
      loop: "python" runs a jitted step from Python, "fori" runs all steps in one
        jitted `lax.fori_loop`, and "scan" in a `lax.scan` with `scan_unroll` steps
        per iteration. "auto" picks "python" on CPU and "fori" elsewhere, because a
        rolled loop ran slower per step on XLA:CPU (benchmarks/RESULTS_pire.md).
      scan_unroll: unroll factor of the "scan" loop.
    """

    steps: int = PAPER_STEPS
    eps: tuple[float, float, float] = normalised_to_grey_levels(PAPER_EPS_NORMALISED)
    learning_rate: tuple[float, float, float] = normalised_to_grey_levels(PAPER_LEARNING_RATE_NORMALISED)
    save_steps: tuple[int, ...] = (PAPER_STEPS,)
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    clip_to_valid_range: bool = False
    initial_fraction_of_eps: float = 1.0
    loop: str = "auto"
    scan_unroll: int = 10

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"Invalid steps {self.steps}; expected at least 1.")
        if len(self.eps) != 3 or min(self.eps) <= 0:
            raise ValueError(f"Invalid eps {self.eps}; expected 3 positive values in grey levels.")
        if len(self.learning_rate) != 3 or min(self.learning_rate) <= 0:
            raise ValueError(f"Invalid learning rate {self.learning_rate}; expected 3 positive values in grey levels.")
        if not self.save_steps or list(self.save_steps) != sorted(set(self.save_steps)):
            raise ValueError(f"Invalid save_steps {self.save_steps}; expected increasing, distinct iterations.")
        if self.save_steps[0] < 1 or self.save_steps[-1] != self.steps:
            raise ValueError(f"Invalid save_steps {self.save_steps}: they must lie in 1..steps and end at steps={self.steps}.")
        if not 0.0 < self.initial_fraction_of_eps <= 1.0:
            raise ValueError(f"Invalid initial_fraction_of_eps {self.initial_fraction_of_eps}; expected a value in (0, 1].")
        if self.loop not in LOOP_MODES:
            raise ValueError(f"Invalid loop {self.loop!r}; expected one of {LOOP_MODES}.")
        if self.scan_unroll < 1:
            raise ValueError(f"Invalid scan_unroll {self.scan_unroll}; expected at least 1.")


def per_channel(value: float | Sequence[float]) -> tuple[float, float, float]:
    """Broadcast a scalar to the three RGB channels, or check a 3-tuple."""
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(item) for item in value)
    if len(values) != 3:
        raise ValueError(f"Invalid per-channel value {value}; expected one number or three (R, G, B).")
    return values


def paper_config(steps: int = PAPER_STEPS, save_steps: Sequence[int] | None = None) -> PireConfig:
    """Return the settings of the released PIRE code: eps 10/255 and lr 1e-4 in normalised units, no range clip.

    References:
      Liu, Zhao, Larson, "Who's Afraid of Adversarial Queries?", ICMR 2019, and the
      authors' code github.com/liuzrcc/PIRE.
    """
    return PireConfig(
        steps=steps,
        eps=normalised_to_grey_levels(PAPER_EPS_NORMALISED),
        learning_rate=normalised_to_grey_levels(PAPER_LEARNING_RATE_NORMALISED),
        save_steps=tuple(save_steps) if save_steps else (steps,),
        clip_to_valid_range=False,
        initial_fraction_of_eps=1.0,
    )


# NOTE: the tuned settings come from 50-step runs on landmarks48 at 256 px with VGG16-GeM
# only (benchmarks/RESULTS_pire.md). Budgets of 1.0, 0.9 and 0.8 of the paper's were tried,
# each with the step at 0.05 of the budget. Other networks and sizes may prefer other values.
TUNED_EPS_FRACTION_OF_PAPER = 0.9
TUNED_LEARNING_RATE_FRACTION_OF_EPS = 0.05
TUNED_INITIAL_FRACTION_OF_EPS = 0.1
TUNED_STEPS = 50


def tuned_config(steps: int = TUNED_STEPS, save_steps: Sequence[int] | None = None) -> PireConfig:
    """Return settings that break retrieval in tens of iterations: 0.9 of the paper's budget, a larger step, a small v0.

    The budget is `TUNED_EPS_FRACTION_OF_PAPER` of the paper's (0.9 x 10/255 normalised,
    about 2.0 grey levels). The step is `TUNED_LEARNING_RATE_FRACTION_OF_EPS` of it (18x
    the paper's), v0 is uniform in +-`TUNED_INITIAL_FRACTION_OF_EPS` eps, so the refined
    output starts near 1.9 grey levels per pixel instead of up to 21, and x + v stays
    inside 0..255. On landmarks48 this reaches the paper preset's T=500 mAP at T=50, at
    a higher SSIM. The full budget gets there sooner, but at a lower SSIM.
    """
    eps = normalised_to_grey_levels(TUNED_EPS_FRACTION_OF_PAPER * PAPER_EPS_NORMALISED)
    return PireConfig(
        steps=steps,
        eps=eps,
        learning_rate=tuple(TUNED_LEARNING_RATE_FRACTION_OF_EPS * value for value in eps),
        save_steps=tuple(save_steps) if save_steps else (steps,),
        clip_to_valid_range=True,
        initial_fraction_of_eps=TUNED_INITIAL_FRACTION_OF_EPS,
    )


PRESETS = {"paper": paper_config, "tuned": tuned_config}
