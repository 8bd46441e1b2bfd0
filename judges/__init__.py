"""LLM judges: UltraFeedback ratings, pairwise verdicts, constitutional critique and labels."""
