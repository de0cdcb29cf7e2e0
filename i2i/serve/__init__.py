"""``i2i serve``: a local web page to draw a label map (or upload an input) and see the generator's answer.

The Gradio-free part (:mod:`i2i.serve.model`: loading, fitting, sampling; :mod:`i2i.serve.labels`:
the palette and snapping drawn colours to it) is importable and testable without the ``serve``
extra; only :mod:`i2i.serve.app` imports Gradio, and only when the command runs.
"""
