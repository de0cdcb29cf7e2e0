"""Using a trained generator: loading, evaluation, translation, export."""
