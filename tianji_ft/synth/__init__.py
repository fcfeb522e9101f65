"""LLM data synthesis: the Tianji wishes generator.

Importing this package stays light (no torch, no openai): the OpenAI SDK is
imported inside the functions that send requests.
"""
