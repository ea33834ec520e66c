"""One Lightning datamodule per task, reading the data as released (docs/data.md); the shared base is `base.py`."""
