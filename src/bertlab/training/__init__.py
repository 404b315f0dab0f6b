"""Optimisation and the Trainer around it: schedules, precision, checkpoints, metric files, loggers."""
