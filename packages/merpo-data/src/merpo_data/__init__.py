"""merpo-data: offline meta-RL datasets (Minari format) for the merpo environments."""
