"""The embedded DDM: the catalog's replica tables are the truth, fsspec moves bytes.

``ddm.LocalDDM`` implements the DDM interface; ``transfer`` is its worker that
carries out replication requests (a daemon the backend declares it needs).
"""

from .ddm import LocalDDM

__all__ = ["LocalDDM"]
