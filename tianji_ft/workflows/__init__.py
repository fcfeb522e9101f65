"""Workflows made of the stages below: the pipeline, the demo, doctor."""
