"""Talking to a model: prompt templates, the chat engine, the history window, evaluation."""
