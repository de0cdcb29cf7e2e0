"""The default pix2pix plugins: U-Net/ResNet generators, PatchGAN discriminators, GAN/L1 losses,
aligned/paired/single datasets and image metrics.

Each submodule is its own plugin, announced through the ``i2i`` entry-point group exactly as a
third-party package would announce its own.
"""
