"""The suite tests what pip installed, not whatever ``smc_ebm`` folder is on the path.

The README's test command installs the package (``pip install ".[test]"``, not editable) and
runs the ``pytest`` of that environment, which does not put the repository root on
``sys.path``; ``python -m pytest`` would, and would then test the source tree instead. An
editable install is the source tree by design, and is checked to be the one installed.
"""

import importlib.metadata
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import smc_ebm


def _installed_location():
    # The distribution pip installed has a direct_url.json; ``pip install .`` also leaves a
    # build's smc_ebm.egg-info in the checkout, which does not count.
    installed = [
        d
        for d in importlib.metadata.distributions(name="smc_ebm")
        if d.read_text("direct_url.json") is not None
    ]
    assert installed, "smc_ebm is not installed by pip"
    dist = installed[0]
    info = json.loads(dist.read_text("direct_url.json"))
    if info.get("dir_info", {}).get("editable", False):
        return Path(unquote(urlparse(info["url"]).path)).resolve() / "smc_ebm", True
    return Path(dist.locate_file("smc_ebm")).resolve(), False


def test_the_imported_package_is_the_installed_one():
    imported = Path(smc_ebm.__file__).resolve().parent
    installed, editable = _installed_location()
    assert imported == installed, (
        f"tests import smc_ebm from {imported}, but the installed "
        f"{'editable ' if editable else ''}package is at {installed}; run the environment's "
        "`pytest`, not `python -m pytest` from the repository root"
    )
