"""Training: the launcher, the dry run, background runs and the loss plot."""
