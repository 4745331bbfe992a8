"""What a training run is: everything that determines its result, and nothing that does not.

A run directory remembers its config, and resuming refuses a different one, so a checkpoint can never
silently continue under other settings. Where and how fast it runs (device, threads) is not config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sr_geo.config import PRECISIONS as RUN_PRECISIONS
from sr_geo.degrade import DegradationRanges
from sr_geo.models.registry import ARCHITECTURES, CLASSICAL

# Noise in the standardised units the models see (a fraction of the band's scene std): up to 3 %,
# from clean aerial imagery to noisy dark bands of a satellite sensor.
DEFAULT_DEGRADATION = DegradationRanges(mtf_nyquist=(0.15, 0.45), noise_std=(0.0, 0.03))
# The networks' arithmetic (`sr_geo.config.PRECISIONS` but auto, which would make the result depend on
# the device): bfloat16 autocast keeps float32 weights and optimiser state.
PRECISIONS = tuple(precision for precision in RUN_PRECISIONS if precision != "auto")


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one model at one scale.

    `sources` are files, folders or globs, every match one raster; `stacks` are globs whose matches
    are stacked as the bands of one raster (products shipped one band per file). Either may end in
    `@BANDS`, a comma-separated list of band names or 1-based indexes to keep, each optionally
    labelled as `LABEL=BAND`. `patch` is the HR patch side. For the GAN, the first `pretrain_steps`
    steps train the generator on L1 alone and the rest adversarially. `blocks` None means the
    architecture's default depth. `init_weights` starts the generator from a weights file of the
    same architecture and scale (fine-tuning shipped weights on one's own archive, or a longer
    schedule continuing a finished run), or the rnn's single-image base from a CNN file; the run
    records the file's SHA-256 beside the config, so a resume refuses a changed file.
    """

    model: str
    scale: int
    sources: tuple[str, ...] = ()
    stacks: tuple[str, ...] = ()
    steps: int = 2000
    batch_size: int = 16
    patch: int = 96
    lr: float = 5e-4
    seed: int = 0
    feats: int = 32
    blocks: int | None = None
    degradation: DegradationRanges = field(default_factory=lambda: DEFAULT_DEGRADATION)
    # Validation split (sr_geo.training.split): ground cells of `split_cell` patch footprints,
    # `val_fraction` of them held out, a guard band of one footprint around them.
    val_fraction: float = 0.15
    split_cell: int = 3
    val_patches: int = 64
    eval_every: int = 250
    log_every: int = 10
    checkpoint_every: int = 100
    # GAN only.
    pretrain_steps: int = 0
    gan_lr: float = 1e-4
    adversarial_weight: float = 5e-3
    feature_matching_weight: float = 0.1
    frequency_weight: float = 1.0
    hf_energy_weight: float = 1.0
    chroma_weight: float = 0.0
    attribution: str = ""
    init_weights: str = ""
    # The weights validated and shipped: an exponential moving average of the generator's over the steps
    # (decay per step; 0 ships the last step's). Adversarial steps swing the texture from batch to batch.
    ema_decay: float = 0.0
    precision: str = "float32"  # one of PRECISIONS; bfloat16 ran twice the steps per second on a CPU with AMX

    def __post_init__(self) -> None:
        if self.model not in ARCHITECTURES or self.model in CLASSICAL:
            learned = sorted(set(ARCHITECTURES) - set(CLASSICAL))
            raise ValueError(f"cannot train {self.model!r} (choose from {', '.join(learned)})")
        if not self.sources and not self.stacks:
            raise ValueError("training needs at least one source or stack")
        if self.patch % self.scale:
            raise ValueError(f"patch {self.patch} is not a multiple of scale {self.scale}")
        if not 0 <= self.pretrain_steps <= self.steps:
            raise ValueError(f"pretrain_steps must be in [0, steps], got {self.pretrain_steps}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def adversarial(self) -> bool:
        return self.model == "gan"

    def architecture_options(self) -> dict:
        return {"feats": self.feats} | ({} if self.blocks is None else {"blocks": self.blocks})

    def to_dict(self) -> dict:
        return asdict(self)
