"""Step two of the method: the branch that maps a front-end vector to an embedding compared by cosine."""
