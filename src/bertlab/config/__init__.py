"""Config schema (typed sections) and the checks Hydra cannot do itself."""
