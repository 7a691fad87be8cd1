"""The name grammar as the pilot sees it: the catalog's rules, read through the wire.

Names become paths on storage and in the pilot's work dir, so both ends check
them against one grammar. The catalog owns it (``catalog/names.py``, standard
library only, like ``catalog/states.py``); the pilot may not import the catalog,
so it reads the grammar here, exactly as it reads the report states through
``protocol.py``. The records use it too (``OutputReport.lfn``).
"""

from dawms.catalog.names import (
    DID_PATTERN,
    MAX_NAME,
    MAX_SCOPE,
    MIN_NAME,
    NAME_PATTERN,
    InvalidName,
    check_name,
    check_scope,
    is_valid_name,
    name_problem,
    split_did,
)

__all__ = ["DID_PATTERN", "MAX_NAME", "MAX_SCOPE", "MIN_NAME", "NAME_PATTERN", "InvalidName",
           "check_name", "check_scope", "is_valid_name", "name_problem", "split_did"]
