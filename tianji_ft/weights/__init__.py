"""Weights after training: checkpoint conversion, LoRA merge, GGUF export and the Ollama Modelfile."""
