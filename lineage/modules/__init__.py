"""Lightning modules, one per fit mode: every family is driven by the same Trainer."""
