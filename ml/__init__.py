"""The profile model: Keras model factory, training data, training, registry gate and scoring."""
