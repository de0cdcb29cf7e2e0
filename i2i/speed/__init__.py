"""Making the training step fast: recipe ``[speed]`` options and the device-side data path.

``i2i bench`` (:mod:`i2i.training.bench`) measures them.

The submodules are imported where they are used; this package imports nothing itself, so that the
recipe schema can read :mod:`i2i.speed.options` without loading the rest.
"""
