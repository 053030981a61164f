"""Stage 2: importance by the dominant subspace — moments, the fit and the rank-k
leverage scores."""
