"""Stage 1: one vector per sample — rendering, the model up to decoder layer L, the kept
vision tokens, the feature store, shard jobs and their files, and the independent
reference of the original recipe."""
