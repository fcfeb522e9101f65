"""Dataset converters and tools for XTuner conversation data."""
