"""How a run applies its model: the options its flags ask for, recorded in the store.

Kept apart from `sr_geo.inference`, the actors' torch code, so that the driver plans a run without
torch (178 MiB and 1.4 CPU s on this machine kind). Only `--consistent` needs torch there: the halo
back-projection adds is a property of its sensor model, and for a stack a measured one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from sr_geo.preflight import check_inference_flags

if TYPE_CHECKING:
    from sr_geo.consistency import BackProjection

# Back-projection iterations for `--consistent`: enough to bring the LR residual of a trained model near
# float precision under a block-mean sensor, and far down under the default PSF. A stack's frames are
# matched in least squares, whose gain lies in fine detail the PSF attenuates: it keeps rising to 100
# iterations (sr_geo.consistency); 50 take most of it at a halo of 18 LR pixels.
CONSISTENCY_ITERATIONS = 8
STACK_CONSISTENCY_ITERATIONS = 50


@dataclass(frozen=True)
class InferenceOptions:
    """How the model is applied, recorded in the store so every actor applies it the same way.

    `uncertainty` adds a per-pixel spread under dihedral transforms (sr_geo.uncertainty);
    `consistency_iterations` > 0 back-projects the output onto the input under the sensor model
    with MTF `consistency_mtf` at Nyquist (sr_geo.consistency): onto the one input of a single-image
    model, onto every frame at its shift for a temporal one.
    """

    uncertainty: bool = False
    consistency_iterations: int = 0
    consistency_mtf: float = 0.3

    @classmethod
    def requested(cls, uncertainty: bool, consistent: bool, temporal: bool, arch: str,
                  sensor_mtf: float | None = None) -> InferenceOptions:
        """The options a run's flags ask for, refused in one line where the model cannot honour them.
        `sensor_mtf` is the sensor's MTF at Nyquist that back-projection assumes (None: the default)."""
        check_inference_flags(uncertainty, consistent, temporal, arch, sensor_mtf)
        iterations = (STACK_CONSISTENCY_ITERATIONS if temporal else CONSISTENCY_ITERATIONS) if consistent else 0
        options = cls(uncertainty, iterations)
        if sensor_mtf is not None:
            options = replace(options, consistency_mtf=sensor_mtf)
        return options

    def back_projection(self, scale: int) -> BackProjection | None:
        if self.consistency_iterations <= 0:
            return None
        # torch: only runs that ask for back-projection load it in the driver
        from sr_geo.consistency import BackProjection
        from sr_geo.degrade import SensorModel

        return BackProjection(SensorModel(scale, self.consistency_mtf), self.consistency_iterations)

    def extra_radius(self, scale: int, temporal: bool = False) -> int:
        """Halo the options need beyond the model's own receptive radius."""
        projection = self.back_projection(scale)
        if projection is None:
            return 0
        return projection.frames_radius if temporal else projection.radius

    def to_attrs(self) -> dict:
        return asdict(self)
