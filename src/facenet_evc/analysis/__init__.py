"""Analyses of a trained FACE-net beyond the official metrics, one module per analysis: e.g.
efficiency (paper Table 6, :mod:`.efficiency`) and metrics per F-E bias group of the test
videos (:mod:`.bias_groups`)."""
