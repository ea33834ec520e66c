"""LightningModules that train a `mega/` network on `tasks.data` batches, with their optimisation and state.

`load_net(checkpoint)` rebuilds the trained network of a run (eval mode) without Hydra or Lightning.
"""

from tasks.training.state import load_net

__all__ = ["load_net"]
