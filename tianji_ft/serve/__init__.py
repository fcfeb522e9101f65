"""Serving a model over HTTP with OpenAI- and Ollama-compatible endpoints."""
