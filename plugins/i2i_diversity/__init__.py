"""The default diversity plugins: latent-code U-Nets, losses that make the code matter
(mode seeking, diversity-sensitive, BicycleGAN), samplers for test-time dropout and latent codes,
and an optional LPIPS metric.

Like ``i2i_pix2pix``, each submodule is announced through the ``i2i`` entry-point group exactly as
a third-party package would announce its own; the core never imports it.
"""
