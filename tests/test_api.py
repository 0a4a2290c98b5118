"""The curated public API."""

from __future__ import annotations

import inspect

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
