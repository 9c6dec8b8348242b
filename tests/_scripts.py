"""Load a script of the repository (an example or a benchmark) as a module, by its path."""

import importlib.util
import sys


def load_script(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    # registered before it runs, as an import would: dataclasses read their module's namespace
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
