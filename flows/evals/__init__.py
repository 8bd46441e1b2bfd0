"""Evaluations: judge-eval on labelled pairs, the judge gate, policy win rates."""
