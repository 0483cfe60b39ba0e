"""Post-scoring: concerns from raw model outputs, per-version calibration, recommendations."""
