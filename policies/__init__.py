"""Meta-RL algorithms and baselines (training side: torch)."""
