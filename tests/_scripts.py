"""Load a script of the repository (an example or a benchmark) as a module, by its path."""

import importlib.util


def load_script(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
