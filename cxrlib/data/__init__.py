"""Data: file names, clinical readings, image files, dataset scans, splits, downloads."""
