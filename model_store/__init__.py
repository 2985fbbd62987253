"""Model store: exports a user's Keras classifier to LiteRT artifacts (TensorFlow side)."""
