"""The curated public API."""

from __future__ import annotations

import inspect
import json
import re
import types
from pathlib import Path

import mlxnb
import mlxnb.testing


def test_all_is_sorted_and_unique() -> None:
    assert mlxnb.__all__ == sorted(set(mlxnb.__all__))
    assert mlxnb.testing.__all__ == sorted(set(mlxnb.testing.__all__))


def test_every_public_name_exists_and_is_documented() -> None:
    for module in (mlxnb, mlxnb.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_errors_share_one_base() -> None:
    public = [getattr(mlxnb, n) for n in mlxnb.__all__]
    errors = [
        e
        for e in public
        if inspect.isclass(e) and issubclass(e, Exception) and not issubclass(e, Warning)
    ]
    assert len(errors) >= 8 and all(issubclass(e, mlxnb.MlxnbError) for e in errors)


def test_all_lists_every_public_name() -> None:
    # httpx's check: nothing public is missing from __all__, nothing in it is missing.
    public = {
        name
        for name, value in vars(mlxnb).items()
        if not name.startswith("_")
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
        and (not isinstance(value, types.ModuleType) or name in mlxnb.__all__)
    }
    lazy = set(mlxnb._LAZY)
    assert set(mlxnb.__all__) - {"__version__"} == public | lazy
    assert all(getattr(mlxnb, name) is not None for name in lazy)


ROOT = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source() -> None:
    found = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    declared = found.group(1) if found else None
    front_end = json.loads((ROOT / "widgets" / "package.json").read_text())["version"]
    assert mlxnb.__version__ == declared == front_end


def test_the_package_ships_type_information() -> None:
    assert (Path(mlxnb.__file__).parent / "py.typed").is_file()
