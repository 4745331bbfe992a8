"""Self-supervised training of the learned models: degrade real HR imagery, learn to invert it."""
