"""Runs on disk."""
def load_run(path):
    raise NotImplementedError
