"""The on-disk store of saved adapters: format, manifest, validation, archives."""

from adapters_store.errors import (
    AdapterExists,
    AdapterNotFound,
    AdapterTooLarge,
    ArchiveRejected,
    ArchiveTooLarge,
    BaseModelMismatch,
    HubError,
    HubUnavailable,
    InvalidAdapter,
    InvalidName,
    InvalidRoute,
    StoreError,
    VersionInUse,
)
from adapters_store.format import BaseModelRef, HubOrigin, Manifest, validate_name
from adapters_store.listing import Filters, Listed, Page
from adapters_store.store import AdapterStore, StoredAdapter
from adapters_store.validate import check_base

__all__ = [
    "AdapterExists",
    "AdapterNotFound",
    "AdapterStore",
    "AdapterTooLarge",
    "ArchiveRejected",
    "ArchiveTooLarge",
    "BaseModelMismatch",
    "BaseModelRef",
    "Filters",
    "HubError",
    "HubOrigin",
    "HubUnavailable",
    "InvalidAdapter",
    "InvalidName",
    "InvalidRoute",
    "Listed",
    "Manifest",
    "Page",
    "StoreError",
    "StoredAdapter",
    "VersionInUse",
    "check_base",
    "validate_name",
]
