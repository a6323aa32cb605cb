"""The top floor: what every stage does first (:mod:`~dints.pipeline.stage`) and the command-line wrapper
(:mod:`~dints.pipeline.cli`)."""
