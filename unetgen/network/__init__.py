"""Plan → torch: the modules a plan describes, their checkpoints, optimisation for inference, and live-memory measurement."""
