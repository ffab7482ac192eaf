"""Model variants and their weights: the registry, checkpoint files, deltas, building a model."""
