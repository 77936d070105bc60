"""Data: datasets, sample-quality metrics and image grids."""
