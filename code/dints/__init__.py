"""DiNTS library shared by the stage entry points in ``code/``, grouped as the paper reads, in floors.

A module imports only modules of its own floor or lower, and no two modules import each other, directly or through
others (function-local imports count); ``tests/test_package.py`` enforces both. From the ground up:

0. The ground: ``errors`` (one-line user errors), ``io`` (atomic writes) and ``run/``, how a run is set up for any
   stage: ``settings`` (typed values resolved from the options), ``layout`` (every run-folder and file name),
   ``dist`` (processes), ``lock`` (one run per folder), ``signals`` (SIGTERM/SIGINT), ``faults`` (fault injection for
   the tests), ``runlog``, ``profiling``.
1. ``space/``, the search space and what lives in it (paper §3-§4): ``topology`` (paths, children, node patterns,
   the architecture-code check), ``sizes`` (paths per block, the channel ladder, input divisibility), ``opsets``
   (the op table, plain data), ``kernels`` (CPU kernels), ``ops`` (modules), ``relax`` (continuous relaxation,
   entropy/topology/memory losses), ``sampling`` (path sampling), ``decode`` (logits to a discrete architecture),
   ``supernet``, ``network`` (the discrete network),
   ``network_memory`` (its training memory in MB, predicted), ``archfile`` (arch.json and MONAI arch codes),
   ``baselines`` (the random, CVPR 2021 and U-shaped architectures), ``visual`` (pictures).
   And ``data/``, tasks in: ``msd`` (dataset.json and file checks), ``msd_size`` (original sizes), ``splits``,
   ``transforms``, ``loader``.
2. ``train/``, optimising networks: ``architect`` (the bilevel step), ``losses``, ``optim``, ``schedule``,
   ``runloop`` (the harness both training stages drive), ``checkpoint``, ``modelfile`` (trained models, rebuilt in
   one place), ``progress`` (the ``progress.png`` pictures).
3. ``evaluate/``, results out: ``inference`` (sliding window, TTA, probability files), ``validation``, ``metrics``
   (the one Dice, HD95, summaries), ``fusion``, ``resample``, ``postprocess``, ``model_folder`` (exported models),
   ``overlay`` (contour overlays on the original grid), ``report_page`` (the results page).
4. ``pipeline/``, on top: ``stage`` (what every stage does first: processes, data checks, splits, the run folder and
   its record), ``records`` (the configuration each finished stage records, and the check of a rerun against it),
   ``search_choice`` (one search chosen among several seeds) and ``cli`` (the command-line wrapper: one line per
   error, exit statuses).

The library never imports the stage entry points or their option parser, and never changes the options it is
given: a stage resolves its settings at its edge and passes explicit values down. The method, and where this code
differs from the paper and from MONAI, is described in ``docs/method.md``.
"""

__version__ = "0.1.0"
