"""Training: the bilevel step, losses, optimiser step, schedules, the run-loop harness, checkpoints, models."""
