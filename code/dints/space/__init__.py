"""The DiNTS search space: topology tables, op table, relaxation and losses, sampling, decoding, networks."""
