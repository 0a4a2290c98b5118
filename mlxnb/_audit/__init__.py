"""The audit family: every turn from every door as one durable row, read back as pandas.

:mod:`~mlxnb._audit.log` is the public face (``AuditLog``); ``record`` holds the row schema,
``store`` the SQLite file, ``frame`` the pandas side and ``view`` the notebook rendering.
"""

from mlxnb._audit.frame import read_export
from mlxnb._audit.log import AuditLog, default_path
from mlxnb._audit.record import SCHEMA_VERSION, TurnRecord

__all__ = ["SCHEMA_VERSION", "AuditLog", "TurnRecord", "default_path", "read_export"]
