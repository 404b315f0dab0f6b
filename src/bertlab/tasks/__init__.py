"""LightningModules, one per task (training objective: `mlm`, `classification`, the name a checkpoint records):
what one training, validation and test step computes."""
