"""Sample data: simulated scans of an analytic phantom, with their ground truth."""

from tomolab.data.phantom import Cylinder, Ellipsoid, default_phantom, tissue_phantom
from tomolab.data.phase_contrast import homogeneous_phantom, simulate_phase_scan
from tomolab.data.simulate import (SimulationParameters, iter_projection_slabs, simulate_arrays,
                                   simulate_flats_darks, simulate_scan, simulation_attrs,
                                   simulation_parameters, true_volume)

__all__ = ["Cylinder", "Ellipsoid", "default_phantom", "SimulationParameters",
           "homogeneous_phantom", "iter_projection_slabs", "simulate_arrays",
           "simulate_flats_darks", "simulate_phase_scan", "simulate_scan", "simulation_attrs",
           "simulation_parameters", "tissue_phantom", "true_volume"]
