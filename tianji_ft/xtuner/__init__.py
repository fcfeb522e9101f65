"""What touches XTuner's processes: the runner, the entry point with its compatibility patches, the dataset cache."""
