"""Making the training step fast: recipe ``[speed]`` options, the device-side data path, ``i2i bench``.

The submodules are imported where they are used; this package imports nothing itself, so that the
recipe schema can read :mod:`i2i.speed.options` without loading the rest.
"""
