"""Ray / DeepSpeed / MLflow glue around the ``stepprune`` library: one config loader, one training loop, one
tracking module. Defines no ``nn.Module``."""
