"""Ray Train: the worker loop and the trainer of one training run."""
