"""Plain types and rules with no I/O: states, ids, hyper-parameters, datasets, errors."""
