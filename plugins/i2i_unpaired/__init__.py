"""Building blocks for unpaired translation (CycleGAN, CUT): unaligned data, a history of fakes and
PatchNCE.

- :mod:`i2i_unpaired.datasets`: the ``unaligned`` dataset (``trainA/`` and ``trainB/`` of any
  sizes) and ``unpaired_aligned``, a view of pix2pix's A|B files whose halves are served
  independently; registered through the ``i2i`` entry-point group like any other plugin.
- :mod:`i2i_unpaired.pool`: :class:`~i2i_unpaired.pool.ImagePool`, CycleGAN's history of fakes.
- :mod:`i2i_unpaired.patchnce`: patch sampling, the MLP head and the InfoNCE loss of CUT.

The pool and PatchNCE register nothing: the model plugins import them.
"""
