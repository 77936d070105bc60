"""Evaluation: sample-quality figures (metrics) and the likelihood in bits/dim (likelihood)."""
