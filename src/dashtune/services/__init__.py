"""Use cases: each function runs one rule-checked change inside one transaction."""
