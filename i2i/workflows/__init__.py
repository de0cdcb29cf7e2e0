"""What a user asks for, end to end: train then evaluate then report, evaluate a run, check data.

The command line and the Python API (:func:`i2i.train`, :func:`i2i.evaluate`, ...) call the same
functions here; the CLI only parses its arguments and prints what these return.
"""
