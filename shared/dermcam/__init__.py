"""dermcam serving core: shared by the predict and gradcam Cloud Functions.

Nothing here imports TensorFlow at module level; only `keras_engine` does, and it is
imported lazily when the reference engine is asked for.
"""
