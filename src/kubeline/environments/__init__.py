"""A pipeline's virtualenvs: which it needs, building them ahead of the first run, their state."""
