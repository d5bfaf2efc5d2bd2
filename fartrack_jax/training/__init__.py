"""Training: losses, optimizer, sharded train steps, checkpoints and the training loop."""
