"""The machinery every stage shares: the per-image stage engine and the training-run scaffold."""
