"""`facerestore train`: make the weights no one publishes (targets, data, trainer, checkpoints)."""
