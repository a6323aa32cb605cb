"""Results out: sliding-window inference, validation, metrics, fold fusion, resampling to original grids."""
