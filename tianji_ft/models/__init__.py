"""Base models: the tiny seeded models the project builds, and hub downloads."""
