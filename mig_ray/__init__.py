"""mig_ray: MIG (Maximize the Information Gain) data selection for instruction tuning, on Ray."""

__version__ = "0.1.0"
