"""The command line: `ddpm-fast demo | train | sample | bench | export` (also `python -m ddpm_fast`)."""
