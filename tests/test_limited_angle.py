"""Scans of less than 180°: accepted with a warning naming the missing wedge, their centre found.

The scans are simulated (:func:`tomolab.data.simulate_scan`, Poisson noise, a drifting
beam) over a full turn and then cut to a ±60° tilt series, 0°–120°, 0°–90°, ... so the
true centre is known; one has the axis far off the detector's middle.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

import tomolab
from tomolab.center import (LOW_SCORE, LimitedAngleWarning, angular_coverage, centroid_fit,
                            find_center_centroid)
from tomolab.errors import ParameterError


def full_turn(size=96, *, center=None, n_rows=4, n_angles=360, seed=1, photons=2.0e4):
    """A simulated scan over 360° (1° apart by default)."""
    return tomolab.data.simulate_scan(size, n_rows=n_rows, n_angles=n_angles,
                                      angle_range=2 * np.pi, center=center, seed=seed,
                                      photons=photons)


def cut(scan, first_degrees, last_degrees):
    """The projections of ``scan`` (a full turn) from ``first`` to ``last`` degrees (may be < 0)."""
    degrees = np.degrees(scan["angle"].values)
    signed = np.where(degrees > 180 + 1e-9, degrees - 360, degrees) if first_degrees < 0 else degrees
    keep = np.flatnonzero((signed >= first_degrees - 1e-9) & (signed <= last_degrees + 1e-9))
    part = scan.isel(angle=keep)
    return part.assign_coords(angle=np.radians(signed[keep])).sortby("angle")


@pytest.fixture(scope="module")
def turn():
    return full_turn()


@contextmanager
def no_limited_warning():
    """A context in which a LimitedAngleWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LimitedAngleWarning)
        yield


# -- which directions a scan covers --------------------------------------------------------

@pytest.mark.parametrize("degrees, limited, wedge, start", [
    (np.arange(-60.0, 61.0), True, 60.0, 60.0),                      # ±60° tilt series
    (np.arange(0.0, 121.0), True, 60.0, 120.0),                      # 0°–120°
    (np.r_[np.arange(0.0, 61.0), np.arange(120.0, 180.0)], True, 60.0, 60.0),  # a gap inside
    (np.linspace(0, 180, 60, endpoint=False), False, 3.0, None),     # 60 sparse angles
    (np.linspace(0, 360, 400, endpoint=False), False, 0.9, None),    # a full turn
    (np.arange(0.0, 180.0, 0.5), False, 0.5, None),
    (np.arange(0.0, 179.0), False, 2.0, None),                       # one step short: no wedge
])
def test_angular_coverage_finds_the_missing_wedge(degrees, limited, wedge, start):
    coverage = angular_coverage(np.radians(degrees))
    assert coverage.limited is limited
    assert coverage.wedge == pytest.approx(wedge, abs=1e-6)
    if start is not None:
        assert coverage.wedge_from == pytest.approx(start, abs=1e-6)
        assert coverage.wedge_to == pytest.approx(start + wedge, abs=1e-6)
        assert f"{wedge:.4g}° of the 180°" in coverage.describe()


def test_angular_coverage_refuses_what_is_not_angles():
    with pytest.raises(ParameterError, match=r"angles=1: need two or more finite angles.*fix"):
        angular_coverage([0.3])
    with pytest.raises(ParameterError, match="finite"):
        angular_coverage([0.0, np.nan, 1.0])


# -- accepted everywhere, with a warning that names the wedge ---------------------------------

def test_reconstruct_warns_of_the_wedge_and_suggests_iterative_methods(turn):
    tilt = cut(turn, -60, 60)
    with pytest.warns(LimitedAngleWarning) as caught:
        volume = tomolab.reconstruct(tilt, center=turn.attrs["true_center"], rows=1,
                                     backend="numpy")
    message = str(caught[0].message)
    assert "angles cover -60°–60° (121 projections)" in message
    assert "no projection from 60° to 120°, 60° of the 180° that parallel-beam needs are missing" \
        in message
    assert "shows streaks and a missing wedge" in message  # gridrec: auto on the CPU
    assert "algorithm=" in message or "iterative" in message
    assert caught[0].filename == __file__  # it points at the caller, not into tomolab
    assert volume.shape == (1, 96, 96) and np.isfinite(volume.values).all()
    assert volume.attrs["n_angles"] == 121


def test_limited_angle_fbp_is_the_slice_with_a_missing_wedge(turn):
    """Over 0°–120° FBP still finds the sample, with the error the wedge explains."""
    from tomolab.data.simulate import true_volume

    truth = true_volume(turn, rows=[1])[0]
    center = turn.attrs["true_center"]
    errors = {}
    for last in (179, 120, 60):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LimitedAngleWarning)
            volume = tomolab.reconstruct(cut(turn, 0, last), center=center, rows=1,
                                         backend="numpy")
        errors[last] = float(np.sqrt(np.mean((volume.values[0] - truth) ** 2)))
    assert errors[179] < errors[120] < errors[60] < truth.std() * 1.5
    with pytest.warns(LimitedAngleWarning, match="gridrec shows streaks"):
        gridrec = tomolab.reconstruct(cut(turn, 0, 120), center=center, rows=1,
                                      algorithm="gridrec", backend="numpy")
    assert np.sqrt(np.mean((gridrec.values[0] - truth) ** 2)) < 1.1 * errors[120]


def test_iterative_algorithms_do_not_warn_of_the_wedge_they_fill(turn):
    with no_limited_warning():
        volume = tomolab.reconstruct(cut(turn, -60, 60), center=turn.attrs["true_center"],
                                     rows=1, algorithm="sirt", iterations=3, backend="numpy")
    assert volume.attrs["algorithm"] == "sirt"


def test_full_and_sparse_scans_do_not_warn(turn):
    sparse = turn.isel(angle=slice(0, 180, 3))  # 60 angles over 180°
    with no_limited_warning():
        tomolab.reconstruct(sparse, center=turn.attrs["true_center"], rows=1, backend="numpy")
        tomolab.reconstruct(turn, center=turn.attrs["true_center"], rows=1, backend="numpy")


def test_reconstruct_to_streams_a_limited_scan_with_the_warning(turn, tmp_path):
    with pytest.warns(LimitedAngleWarning, match="0°–120°"):
        volume = tomolab.reconstruct_to(cut(turn, 0, 120), tmp_path / "v.zarr", center="auto",
                                        rows="1:3", backend="numpy")
    assert volume.sizes["z"] == 2
    assert volume.attrs["center_source"].startswith("auto (centroid")
    assert abs(volume.attrs["center"] - turn.attrs["true_center"]) < 0.3


def test_the_sweeps_work_on_the_range_present_and_say_what_to_trust(turn):
    tilt = cut(turn, -70, 70)
    with pytest.warns(LimitedAngleWarning, match="sharpness moves little with the centre"):
        stack = tomolab.sweep_center(tilt, backend="numpy")  # centred on the centroid fit
    assert abs(stack.attrs["estimate"] - turn.attrs["true_center"]) < 0.3
    assert stack.sizes["center"] == 41 and np.isfinite(stack.values).all()
    with pytest.warns(LimitedAngleWarning, match="-70°–70°"):
        phase = tomolab.sweep_phase(tilt, center=turn.attrs["true_center"], ratios=[50, 200],
                                    backend="numpy")
    assert phase.sizes["ratio"] == 2 and np.isfinite(phase.values).all()


def test_the_cli_reconstructs_a_tilt_series_with_a_one_line_warning(turn, tmp_path):
    tilt = cut(turn, -60, 60)
    path = tmp_path / "tilt.h5"
    tomolab.io.write_dxchange(path, tilt.projections.values, tilt.angle.values,
                              tilt.flats.values, tilt.darks.values)
    result = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", str(path), "--rows",
                             "1:3", "-o", str(tmp_path / "v.zarr"), "-q", "--backend", "numpy"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "Traceback" not in result.stderr
    assert "60° of the 180° that parallel-beam needs are missing" in warned[0]
    assert "use --algorithm 'sirt', 'cgls' or 'tv'" in warned[0]  # in flags, as the CLI speaks
    assert "algorithm=" not in warned[0]
    volume = tomolab.io.open_volume(tmp_path / "v.zarr")
    assert abs(volume.attrs["center"] - turn.attrs["true_center"]) < 0.3


def test_the_cli_asks_for_a_centre_it_cannot_find(turn, tmp_path):
    narrow = cut(turn, 0, 12)
    path = tmp_path / "narrow.h5"
    tomolab.io.write_dxchange(path, narrow.projections.values, narrow.angle.values,
                              narrow.flats.values, narrow.darks.values)
    out = tmp_path / "v.zarr"
    result = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", str(path), "-o",
                             str(out), "-q", "--backend", "numpy"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if "warning" not in line]
    assert len(error) == 1, result.stderr
    assert "angles cover 0°–12°" in error[0] and "pass the centre" in error[0]
    assert not out.exists()


# -- the centre on the range present -----------------------------------------------------------

@pytest.mark.parametrize("first, last", [(-60, 60), (0, 120), (-70, 70), (0, 90), (30, 120)])
@pytest.mark.parametrize("center", [None, 30.3, 66.0], ids=["default", "far-left", "right"])
def test_find_center_on_a_limited_range(first, last, center, backend):
    scan = cut(full_turn(center=center, seed=abs(first) + last), first, last)
    true = scan.attrs["true_center"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clear answer: no low-score warning
        estimate = tomolab.find_center(scan, backend=backend)
    assert list(estimate.estimates) == ["centroid"]
    assert abs(estimate.center - true) < 0.15, (estimate, true)
    assert estimate.score > LOW_SCORE


def test_find_center_on_sparse_angles_over_180_keeps_vo(turn):
    sparse = turn.isel(angle=slice(0, 180, 3))
    estimate = tomolab.find_center(sparse, backend="numpy")
    assert "vo" in estimate.estimates and "centroid" not in estimate.estimates
    assert abs(estimate.center - turn.attrs["true_center"]) < 0.5


def test_the_score_falls_with_the_range(turn):
    true = turn.attrs["true_center"]
    scores = {}
    for last in (25, 45, 90, 120):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimate = tomolab.find_center(cut(turn, 0, last), backend="numpy")
        scores[last] = estimate.score
        # the score says how far to trust it: a high score is a close centre
        assert abs(estimate.center - true) < 0.2 + 1.0 * (1 - estimate.score), (last, estimate)
    assert scores[25] < scores[45] < scores[90] <= scores[120]


def test_a_narrow_range_warns_and_a_narrower_one_asks_for_the_centre(turn):
    with pytest.warns(UserWarning, match=r"low score.*covers 24° of 180°.*pass the centre"):
        tomolab.find_center(cut(turn, 0, 24), backend="numpy")
    with pytest.raises(ParameterError, match=r"angles cover 0°–10°.*the centroid fit cannot find "
                                             r"the centre.*fix: pass the centre"):
        tomolab.find_center(cut(turn, 0, 10), backend="numpy")
    with pytest.warns(LimitedAngleWarning), pytest.raises(ParameterError, match="pass the centre"):
        tomolab.reconstruct(cut(turn, 0, 10), center="auto", backend="numpy")


def test_methods_that_need_180_degrees_say_what_to_use(turn):
    tilt = cut(turn, -60, 60)
    with pytest.raises(ParameterError, match=r"60° of the 180°.*needs projections over 180°.*"
                                             r'method="centroid"'):
        tomolab.find_center(tilt, method="vo", backend="numpy")
    with pytest.raises(ParameterError, match=r'no pair of projections 180° apart.*"centroid"'):
        tomolab.find_center(tilt, method="phase-correlation", backend="numpy")
    estimate = tomolab.find_center(tilt, method="centroid", backend="numpy")
    assert abs(estimate.center - turn.attrs["true_center"]) < 0.3


def test_centroid_agrees_with_vo_on_a_full_scan(turn):
    half = turn.isel(angle=slice(0, 180))
    centroid = tomolab.find_center(half, method="centroid", backend="numpy")
    vo = tomolab.find_center(half, method="vo", backend="numpy")
    assert abs(centroid.center - vo.center) < 0.3
    assert centroid.score > 0.9


def test_a_sample_leaving_the_field_of_view_is_not_trusted():
    """Truncated projections: the total attenuation changes with the angle, the score falls."""
    from tomolab.data.phantom import Cylinder, project_slice

    angles = np.radians(np.arange(-60.0, 61.0))
    inside = [Cylinder(10, 0, -5, 5, 14, 14, 0, 1.0)]
    leaving = [Cylinder(60, 0, -5, 5, 14, 14, 0, 1.0)]  # reaches past the edge at some angles
    cols = np.arange(128)
    good = centroid_fit(project_slice(inside, angles, cols, [0.0], center=60.0)[:, 0], angles)
    bad = centroid_fit(project_slice(leaving, angles, cols, [0.0], center=60.0)[:, 0], angles)
    assert abs(good.center - 60.0) < 0.05 and good.score > 0.9
    assert good.mass_variation < 0.01
    assert bad.mass_variation > 0.03 and bad.score < LOW_SCORE


def test_a_sample_wider_than_the_detector_has_no_centroid():
    from tomolab.data.phantom import Cylinder, project_slice

    angles = np.radians(np.arange(0.0, 120.0))
    wide = [Cylinder(0, 0, -5, 5, 90, 90, 0, 1.0)]
    sino = project_slice(wide, angles, np.arange(96), [0.0], center=47.5)[:, 0]
    with pytest.raises(ParameterError, match=r"fills the detector.*fix: pass the centre"):
        find_center_centroid(sino, angles)


def test_centroid_on_cupy_matches_numpy(xp):
    from tomolab.data.phantom import default_phantom, project_slice

    angles = np.radians(np.arange(-60.0, 61.0, 2.0))
    sino = project_slice(default_phantom(96, 8, radius_fraction=0.35), angles, np.arange(96),
                         [0.0], center=51.2)[:, 0]
    center, score = find_center_centroid(xp.asarray(sino), angles)
    assert abs(center - 51.2) < 0.05 and score > 0.9


# -- the panel ---------------------------------------------------------------------------------

def _panel(scan):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("holoviews")
    from tomolab.widgets import ReconstructionPanel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitedAngleWarning)
        return ReconstructionPanel(scan, backend="numpy", background=False, size=200)


def test_the_panel_names_the_wedge_and_finds_the_centre_of_a_tilt_series(turn):
    tilt = cut(turn, -60, 60)
    panel = _panel(tilt)
    assert "60° of the 180° that parallel-beam needs are missing" in panel.coverage_note.value
    assert "centroid" in panel.center_sweep.estimate_label.value
    assert abs(panel.center - turn.attrs["true_center"]) < 0.3
    assert panel.preview_task.state == "done"
    # the overlay has nothing to pair, and says so in words in its tab: not an error, no figure
    overlay = panel.center_overlay
    assert overlay.task.error == "" and overlay.pair is None
    shown = overlay.children[0].value
    assert "needs two projections 180° apart" in shown
    assert "angles cover -60°–60° (121 projections): no projection from 60° to 120°" in shown
    assert overlay.plot_widget not in overlay.children
    with pytest.warns(LimitedAngleWarning):
        volume = panel.reconstruct()
    assert volume.shape == (4, 96, 96) and panel.task.error == ""
    # a full scan has no note
    assert _panel(turn.isel(angle=slice(0, 180, 2))).coverage_note.value == ""


def test_the_panel_asks_for_a_centre_it_cannot_find_in_its_own_words(turn):
    panel = _panel(cut(turn, 0, 10))
    error = panel.center_sweep.task.error
    assert "angles cover 0°–10°" in error and "the centroid fit cannot find the centre" in error
    assert "fix: pass the centre ('centre px' in the panel)" in error
    assert "center=" not in error
    assert panel.center is None and panel.center_overlay.task.error == ""
    assert "needs two projections 180° apart" in panel.center_overlay.unavailable


def test_the_iteration_controls_show_for_iterative_algorithms_only(turn):
    panel = _panel(cut(turn, 0, 120))
    assert {"sirt", "cgls", "tv"} <= set(panel.algorithm_input.options)
    assert "use algorithm='sirt', 'cgls' or 'tv'" in panel.coverage_note.value
    panel.algorithm_input.value = "fbp"
    assert panel.iteration_box.layout.display == "none"
    panel.preview_iterations()  # nothing to preview for FBP
    assert panel.iteration_preview is None
    for name in ("sirt", "cgls", "tv"):
        panel.algorithm_input.value = name
        assert panel.iteration_box.layout.display is None
        assert panel._regularization_box.layout.display == (None if name == "tv" else "none")


def test_the_regularisation_slider_previews_one_slice_on_release(turn):
    panel = _panel(cut(turn, -60, 60))
    panel.rows_input.value = "0:2"
    panel.algorithm_input.value = "tv"
    panel.iterations_input.value = 4
    assert panel.regularization_input.disabled  # "λ auto" is ticked
    panel.regularization_auto.value = False  # previews with the slider's λ
    first = panel.iteration_preview
    assert panel.iteration_preview_task.error == ""
    assert first.attrs["algorithm"] == "tv" and first.attrs["iterations"] == 4
    assert first.attrs["regularization"] == pytest.approx(panel.regularization_input.value)
    assert first.sizes["z"] == 1 and int(first["row"].values[0]) == 1  # the middle of 0:2
    panel.regularization_input.value = 1e-2  # a release of the slider: a new preview
    second = panel.iteration_preview
    assert second is not first and second.attrs["regularization"] == pytest.approx(1e-2)
    # a stronger λ flattens the slice: less total variation
    assert np.abs(np.diff(second.values[0], axis=-1)).sum() \
        < np.abs(np.diff(first.values[0], axis=-1)).sum()
    figure = next(m for m in panel._iteration_hv.state.references() if hasattr(m, "xaxis"))
    assert figure.title.text == "row 1: tv, λ 1.00e-02"
    # Reconstruct uses the same settings
    volume = panel.reconstruct()
    assert volume.attrs["algorithm"] == "tv" and volume.attrs["iterations"] == 4
    assert volume.attrs["regularization"] == pytest.approx(1e-2) and volume.sizes["z"] == 2


def test_iteration_preview_errors_show_in_step_6(turn):
    panel = _panel(cut(turn, 0, 120))
    panel.algorithm_input.value = "sirt"
    panel.rows_input.value = "7:99"
    panel.preview_iterations()
    assert "rows='7:99'" in panel.iteration_preview_task.error
    assert panel.iteration_preview is None
    panel.rows_input.value = ""
    panel.center = None
    panel.iteration_preview_button.click()
    assert "centre px" in panel.iteration_preview_task.error
    assert "no centre chosen" in panel.iteration_preview_task.error


AXIS = (50.0, 0.05)  # a tilted axis: centre(row) = 50.0 + 0.05 * row


def tilted_series(degrees, *, shapes=None, n_cols=96, n_rows=24, seed=0):
    """Counts of a scan at ``degrees`` whose axis is at ``AXIS`` on each row (Poisson noise)."""
    from tomolab.data.phantom import default_phantom, project_slice

    a, b = AXIS
    angles = np.radians(np.asarray(degrees, dtype=np.float64))
    shapes = default_phantom(n_cols, n_rows, radius_fraction=0.35) if shapes is None else shapes
    z = np.arange(n_rows) - (n_rows - 1) / 2
    line = np.concatenate([project_slice(shapes, angles, np.arange(n_cols), [z[r]],
                                         center=a + b * r) for r in range(n_rows)], axis=1)
    counts = np.random.default_rng(seed).poisson(2e4 * np.exp(-line / n_cols)).astype(np.uint16)
    return tomolab.from_arrays(counts, angles, flats=np.full((4, n_rows, n_cols), 20000, np.uint16),
                               darks=np.zeros((2, n_rows, n_cols), np.uint16))


@pytest.mark.parametrize("first, last", [(-60, 60), (0, 120)])
def test_find_axis_fits_a_tilted_axis_on_a_tilt_series(first, last, backend):
    """find_axis picks the centroid fit by itself on a scan of less than 180°, as find_center."""
    a, b = AXIS
    scan = tilted_series(np.arange(first, last + 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clear answers at every row: no warning
        fit = tomolab.find_axis(scan, backend=backend)
    assert fit.method == "centroid" and fit.as_attrs()["axis_method"] == "centroid"
    assert abs(fit.slope - b) < 0.005 and not fit.suspect
    assert np.abs(fit.center(fit.rows) - (a + b * fit.rows)).max() < 0.1
    assert (fit.scores > LOW_SCORE).all() and fit.used.all()
    # the methods that need 180° are still refused by name, pointing at what works
    with pytest.raises(ParameterError, match='method="centroid"'):
        tomolab.find_axis(scan, method="vo", backend=backend)
    assert tomolab.find_axis(scan, method="centroid", backend=backend).slope == \
        pytest.approx(fit.slope)


def test_find_axis_keeps_vo_on_a_full_scan():
    scan = tilted_series(np.arange(0.0, 180.0))
    fit = tomolab.find_axis(scan, backend="numpy")
    assert fit.method == "vo" and abs(fit.slope - AXIS[1]) < 0.01


def test_find_axis_leaves_out_rows_without_the_sample_and_says_so():
    """A sample in the middle rows only: the rows above and below it have no centroid."""
    from tomolab.data.phantom import Cylinder

    a, b = AXIS
    sample = [Cylinder(5, -3, -4, 4, 20, 14, 0, 1.0), Cylinder(-10, 8, -4, 4, 6, 6, 0, 0.5)]
    scan = tilted_series(np.arange(-60.0, 61.0), shapes=sample)
    with pytest.warns(UserWarning, match=r"covers 120° of 180°, but rows \[2, 4, 19, 21\] are "
                                         r"left out \(.*\); do not trust it blindly: pass rows= "
                                         r"where the sample is") as caught:
        fit = tomolab.find_axis(scan, backend="numpy")
    assert caught[0].filename == __file__
    assert fit.used.tolist() == [False, False, True, True, True, True, True, False, False]
    assert (fit.scores[~fit.used] == 0).all() and not fit.suspect
    assert np.abs(fit.center(fit.rows[fit.used]) - (a + b * fit.rows[fit.used])).max() < 0.15
    # measured where the sample is, the same line without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inner = tomolab.find_axis(scan, rows=[8, 10, 12, 14, 16], backend="numpy")
    assert abs(inner.slope - fit.slope) < 0.01


@pytest.mark.filterwarnings("ignore:.*do not lie on a line")  # 24°: the rows scatter too
def test_find_axis_on_a_narrow_range_warns_and_on_a_narrower_one_asks_for_the_centre():
    with pytest.warns(UserWarning, match=r"covers 24° of 180°, but the centres have low scores "
                                         r"\(median 0\.\d\d < 0\.3\); do not trust it"):
        fit = tomolab.find_axis(tilted_series(np.arange(0.0, 25.0)), backend="numpy")
    assert fit.method == "centroid" and np.median(fit.scores) < LOW_SCORE
    with pytest.raises(ParameterError, match=r"angles cover 0°–10° \(11 projections\).*cannot find "
                                             r"the centre at two or more of rows.*fix: pass the "
                                             r"centre"):
        tomolab.find_axis(tilted_series(np.arange(0.0, 11.0)), backend="numpy")
    with pytest.raises(ParameterError, match="rows_averaged"):  # refused once, not per row
        tomolab.find_axis(tilted_series(np.arange(0.0, 11.0)), rows_averaged=-2,
                          backend="numpy")


def test_the_newest_lambda_is_previewed_when_the_slider_moves_during_a_preview(turn):
    """λ moved three times while previews run in the background: the last λ is the one shown."""
    pytest.importorskip("ipywidgets")
    pytest.importorskip("holoviews")
    from tomolab.widgets import ReconstructionPanel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitedAngleWarning)
        panel = ReconstructionPanel(cut(turn, -60, 60), backend="numpy", background=True, size=200)
    panel.center = float(turn.attrs["true_center"])
    panel.rows_input.value = "0:2"
    panel.algorithm_input.value = "tv"
    panel.iterations_input.value = 200  # long enough that the next moves find it running
    panel.regularization_auto.value = False
    for value in (2e-3, 5e-3, 1e-2):
        panel.regularization_input.value = value
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            panel.iteration_preview_task.running or panel._rerun
            or panel.iteration_preview is None
            or panel.iteration_preview.attrs.get("regularization") != pytest.approx(1e-2)):
        time.sleep(0.05)
    assert panel.iteration_preview_task.error == ""
    assert panel.iteration_preview.attrs["regularization"] == pytest.approx(1e-2)


def test_a_row_without_the_sample_is_told_apart_from_a_sample_that_fills_the_detector():
    from tomolab.center.centroid import centroid_fit

    rng = np.random.default_rng(0)
    theta = np.linspace(-np.pi / 3, np.pi / 3, 121)
    for offset in (0.0, 0.3):  # noise alone, and noise on an imperfect flat field
        with pytest.raises(ParameterError, match="no sample in this row"):
            centroid_fit(rng.normal(0, 0.01, (121, 96)) + offset, theta)
    cols = np.arange(96) - 47.5
    wide = np.array([np.sqrt(np.clip(60 ** 2 - (cols - 5 * np.cos(t)) ** 2, 0, None)) * 0.01
                     for t in theta]) + rng.normal(0, 0.01, (121, 96))
    with pytest.raises(ParameterError, match="fills the detector"):
        centroid_fit(wide, theta)
