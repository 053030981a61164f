"""Stage 3: selections — budgets, top-N and random-N, the method registry and the
k-center and k-means baselines."""
