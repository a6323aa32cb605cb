"""DiNTS library shared by the stage entry points in ``code/``, grouped as the paper reads.

- ``space/``: the search space and what lives in it (paper §3-§4). ``topology`` (paths, children, node patterns,
  the architecture-code check), ``opsets`` (the op table: name, kernels, memory cost, label, builder), ``ops``
  (modules), ``relax`` (continuous relaxation, entropy/topology/memory losses, memory of codes), ``sampling``
  (path sampling), ``decode`` (logits to a discrete architecture), ``supernet``, ``network`` (the discrete net),
  ``memory`` (the discrete net's training memory in MB, predicted), ``archfile`` (arch.json and MONAI arch codes),
  ``visual`` (pictures).
- ``data/``: MSD tasks in. ``msd`` (dataset.json and file checks), ``msd_size`` (original sizes), ``splits``,
  ``transforms``, ``loader``.
- ``train/``: optimising networks. ``architect`` (the bilevel step), ``losses``, ``optim``, ``schedule``,
  ``runloop`` (the harness both training stages drive), ``checkpoint``, ``modelfile`` (architectures and trained
  models for stages 2-4).
- ``evaluate/``: results out. ``inference`` (sliding window, TTA, probability files), ``validation``, ``metrics``
  (the one Dice, HD95, summaries), ``fusion``, ``resample``.
- ``run/``: how a run is set up, for any stage. ``settings`` (typed values resolved from the options), ``layout``
  (every run-folder and file name), ``stage`` (start-up checks), ``dist`` (processes), ``runlog``, ``profiling``.
  The distributed helpers sit here rather than in ``train/`` because data loading, validation and inference use
  them as much as training does.
- ``errors`` and ``io`` (one-line user errors, atomic writes) serve every group.

The library never imports the stage entry points or their option parser, and never changes the options it is
given: a stage resolves its settings at its edge and passes explicit values down.
"""

__version__ = "0.1.0"
