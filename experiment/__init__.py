"""toolturn-run: an experiment (generate -> audit -> train -> evaluate -> report) as one Hydra app."""
