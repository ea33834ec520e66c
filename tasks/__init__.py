"""What to learn and how to feed it: `tasks.data` (one datamodule per task) and `tasks.training` (LightningModules)."""
