"""LightningModules: what one training, validation and test step computes for each task."""
