"""The stage engine: prompts by reference, big shards, per-request journal, streamed stages."""
