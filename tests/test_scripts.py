"""The make targets' shell scripts call the library by module path (`python -c "from facecomp...
import ..."`): every such import resolves, so a move of a module cannot silently break
`make model`, `make age-model` or `make occlusion-model` at their last step."""

from __future__ import annotations

import importlib
import re

from .conftest import ROOT


def test_every_library_import_in_the_make_scripts_resolves():
    found = []
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        for module, names in re.findall(r"from (facecomp[\w.]*) import ([\w, ]+)",
                                        script.read_text()):
            found.append(script.name)
            mod = importlib.import_module(module)
            for name in (n.strip() for n in names.split(",")):
                assert hasattr(mod, name), f"{script.name}: {module} has no {name}"
    assert {"make_age_model.sh", "make_occlusion_model.sh"} <= set(found)
