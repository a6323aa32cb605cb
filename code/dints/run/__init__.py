"""Run set-up shared by every stage: typed settings, the run layout, start-up checks, processes, logs."""
