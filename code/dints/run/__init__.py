"""Run set-up shared by every stage: typed settings, the run layout, processes, locks, signals, fault injection,
logs."""
