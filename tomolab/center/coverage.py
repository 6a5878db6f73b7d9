"""Which projection directions a scan covers, and the wedge it leaves out.

Parallel-beam tomography needs projections from every direction over 180°
(a projection at ``θ + 180°`` is the mirror image of the one at ``θ``). A
tilt series of ±60°, a scan stopped at 120° or one with a gap in the middle
leaves a *missing wedge* of directions: filtered backprojection then shows
streaks and elongates features along the missing directions, and centre
finders that pair opposite projections (Vo's method, the 0°/180° phase
correlation) have nothing to pair.

:func:`angular_coverage` folds the angles onto one half-turn and finds the
largest run of directions with no projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomolab.errors import ParameterError

__all__ = ["Coverage", "LimitedAngleWarning", "angular_coverage", "WEDGE_FACTOR"]

#: a gap between neighbouring directions wider than this many typical steps is a missing wedge
WEDGE_FACTOR = 2.0


class LimitedAngleWarning(UserWarning):
    """The scan leaves out a wedge of the 180° of directions that parallel-beam tomography needs."""


@dataclass(frozen=True)
class Coverage:
    """The directions a scan covers (all angles in degrees).

    Attributes
    ----------
    first, last : float
        The smallest and largest angle of the scan.
    n_angles : int
        Number of projections.
    step : float
        The typical angle between neighbouring directions (folded onto 0°–180°).
    wedge : float
        The widest run of directions with no projection: from ``wedge_from``
        to ``wedge_to`` (folded onto 0°–180°, ``wedge_to`` may be 180°). A
        complete scan has ``wedge == step``.
    limited : bool
        True when the wedge is wider than :data:`WEDGE_FACTOR` typical steps.
    """

    first: float
    last: float
    n_angles: int
    step: float
    wedge: float
    wedge_from: float
    wedge_to: float
    limited: bool

    @property
    def covered(self) -> float:
        """Degrees of the half-turn with projections: ``180 - wedge`` (180 when complete)."""
        return 180.0 if not self.limited else 180.0 - self.wedge

    def describe(self) -> str:
        """One line naming the range and, for a limited scan, the missing wedge.

        Examples
        --------
        >>> angular_coverage(np.radians(np.arange(0, 121))).describe()
        'angles cover 0°–120° (121 projections): no projection from 120° to 180°, 60° of the 180° that parallel-beam needs are missing'
        """
        text = (f"angles cover {self.first:.4g}°–{self.last:.4g}° ({self.n_angles} projections)")
        if not self.limited:
            return text + ": every direction of the 180° that parallel-beam needs"
        return (text + f": no projection from {self.wedge_from:.4g}° to {self.wedge_to:.4g}°, "
                f"{self.wedge:.4g}° of the 180° that parallel-beam needs are missing")


def angular_coverage(angles) -> Coverage:
    """Fold the angles onto one half-turn and find the widest gap between directions.

    Parameters
    ----------
    angles : array_like
        Projection angles in radians (any order, any number of turns).

    Returns
    -------
    Coverage

    Examples
    --------
    >>> import numpy as np
    >>> tilt = angular_coverage(np.radians(np.arange(-60, 61)))        # a ±60° tilt series
    >>> tilt.limited, tilt.wedge, tilt.wedge_from, tilt.wedge_to
    (True, 60.0, 60.0, 120.0)
    >>> angular_coverage(np.linspace(0, np.pi, 60, endpoint=False)).limited   # sparse, complete
    False
    >>> angular_coverage(np.linspace(0, 2 * np.pi, 400, endpoint=False)).limited
    False
    """
    radians = np.asarray(angles, dtype=np.float64).ravel()
    if radians.size < 2 or not np.all(np.isfinite(radians)):
        raise ParameterError("need two or more finite angles", where="angles",
                             value=radians.size if radians.size < 2 else "not finite",
                             fix="pass one angle in radians per projection")
    degrees = np.degrees(radians)
    folded = np.unique(np.round(np.mod(degrees, 180.0), 9))
    if folded.size > 1 and folded[-1] - folded[0] > 180.0 - 1e-6:
        folded = folded[:-1]  # 180° is 0° again
    if folded.size == 1:
        return Coverage(float(degrees.min()), float(degrees.max()), int(radians.size), 0.0,
                        180.0, float(folded[0]), float(folded[0]) + 180.0, True)
    gaps = np.diff(np.r_[folded, folded[0] + 180.0])
    step = float(np.median(gaps))
    widest = int(np.argmax(gaps))
    wedge = float(gaps[widest])
    start = float(folded[widest])
    return Coverage(float(degrees.min()), float(degrees.max()), int(radians.size), step,
                    round(wedge, 9), round(start, 9), round(start + wedge, 9),
                    bool(wedge > WEDGE_FACTOR * step))
