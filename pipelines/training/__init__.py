"""Training the triplet branch: frozen splits, triplet datasets, loss, training loop, evaluation, artifacts."""
