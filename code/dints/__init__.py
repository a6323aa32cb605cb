"""DiNTS library shared by the stage entry points in ``code/``.

One module per concept: configuration lives in ``code/config.py``; here are the MSD data pipeline
(``msd``, ``splits``, ``transforms``, ``loader``), the search space (``topology``, ``relax``, ``decode``,
``ops``, ``supernet``, ``network``, ``archfile``, ``visual``) and the run helpers (``dist``, ``runlog``,
``errors``, ``io``).
"""

__version__ = "0.1.0"
