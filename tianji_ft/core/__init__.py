"""The bottom layer: errors, atomic file I/O, paths and output safety (no heavy imports)."""
