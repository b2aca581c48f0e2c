"""Stage 2 benchmark: feature sets, splits, missingness scenarios, metrics and training.

- :mod:`mmpipe.bench.data`: load a feature set (modality -> encoder stores) into
  :class:`~mmpipe.bench.data.BenchData`; normalisation fitted on the training split.
- :mod:`mmpipe.bench.splits`: patient-level stratified train/val/test splits, one file
  per cohort and seed.
- :mod:`mmpipe.bench.missingness`: missingness scenarios (natural, MCAR, HAM's
  completeness, BD's test-time missingness) as masks, one file per scenario, rate and
  seed; modality subsets for subset evaluation.
- :mod:`mmpipe.bench.metrics`: the per-run classification metrics.
- :mod:`mmpipe.bench.trainer`: the training loop shared by every neural method.
"""
