"""compare: direct, converted and hybrid spiking RL agents judged by one shared harness."""

__version__ = "0.1.0"
