"""Trial stacks: many slices at once, one per trial parameter, each with a score.

:func:`sweep_slices` reconstructs one detector row at many trial centres,
:func:`sweep_phase_slices` at many Paganin δ/β ratios, each in batched
operations (the trial values play the part of slices in a filtered
backprojection, :mod:`tomolab.recon`): on the GPU as many as memory allows,
on the CPU about half a second of work a batch, so progress and cancel act
between batches. :func:`sharpness_scores` and
:func:`phase_scores` rate the trial slices in [0, 1] (1 best);
:func:`peak_center` finds where the scores peak.

Examples
--------
>>> from tomolab import sweep
>>> round(sweep.peak_center([1.0, 2.0, 3.0], [0.2, 1.0, 0.4]), 2)
2.07
"""

from tomolab.sweep.center import (SCORED_WIDTH, SWEEP_SCORES, best_is_one, bin_slices,
                                  peak_center, score_slices, sharpness_scores, sweep_bytes,
                                  sweep_slices)
from tomolab.sweep.phase import (PHASE_SCORES, check_ratios, phase_scores, phase_sweep_bytes,
                                 sweep_phase_slices)

__all__ = ["PHASE_SCORES", "SCORED_WIDTH", "SWEEP_SCORES", "best_is_one", "bin_slices",
           "check_ratios", "peak_center", "phase_scores", "phase_sweep_bytes", "score_slices",
           "sharpness_scores", "sweep_bytes", "sweep_phase_slices", "sweep_slices"]
