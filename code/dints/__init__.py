"""DiNTS library shared by the stage entry points in ``code/``.

One module per concept:

- data: ``msd`` (dataset.json validation), ``splits``, ``transforms``, ``loader``;
- search space: ``topology``, ``opsets``, ``relax`` (probabilities and losses), ``decode``, ``ops``, ``supernet``,
  ``network``, ``archfile``, ``visual``;
- training: ``architect`` (the bilevel step), ``schedule``, ``optim``, ``checkpoint``, ``evaluate``;
- inference and results: ``inference``, ``metrics``, ``fusion``, ``resample``, ``modelfile``;
- run helpers: ``stage``, ``dist``, ``runlog``, ``errors``, ``io``, ``profiling``.
"""

__version__ = "0.1.0"
