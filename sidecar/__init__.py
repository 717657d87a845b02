"""edgelake-sidecar: scripts seed and sync, node checks, probes and metrics for EdgeLake nodes."""

__version__ = "0.1.0"
