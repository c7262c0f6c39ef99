"""One run: the training loop, its checkpoints, and its place among DDP replicas."""
