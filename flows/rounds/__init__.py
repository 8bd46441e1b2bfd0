"""On-policy rounds: serve the policy the last round trained, generate, judge, build, train, evaluate."""
