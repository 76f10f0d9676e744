"""Model stage: where each architecture keeps its decoder blocks, per-layer config rewriting, in-memory block removal, loading, devices."""
