"""Data stage: calibration recipes and eval suites, the calibration draw, and the benchmarks (lm-eval prompt formats)."""
