"""Scoring stage: acc / acc_norm from log-likelihoods, calibration accuracy and relevance (Scorer), racing, baseline metrics, held-out evaluation."""
