"""The version of i2i, recorded in checkpoints and run directories."""

__version__ = "0.1.0"
