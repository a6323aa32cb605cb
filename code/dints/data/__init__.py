"""MSD task folders in: dataset.json checks, original sizes, splits, transforms, loaders."""
