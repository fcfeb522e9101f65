"""LLM data synthesis: the Tianji wishes generator, and the pairwise judge (rubrics, verdicts, rates).

Importing this package stays light (no torch, no openai): the OpenAI SDK is
imported inside the functions that send requests.
"""
