"""Serving: the vLLM server lifecycle, the OpenAI-compatible client and the default model."""
