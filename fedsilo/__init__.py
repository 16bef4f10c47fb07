"""fedsilo: cross-silo federated learning for hospitals on AWS (CLI, runner, simulation)."""
