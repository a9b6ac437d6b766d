"""Store errors. Each carries a stable `code` that the API maps to an HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    code = "store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidName(StoreError):
    code = "invalid_name"


class AdapterNotFound(StoreError):
    code = "adapter_not_found"


class AdapterExists(StoreError):
    code = "adapter_exists"


class InvalidAdapter(StoreError):
    """The files do not form a valid adapter (missing file, bad JSON, pickle, ...)."""

    code = "invalid_adapter"


class ArchiveRejected(InvalidAdapter):
    """An archive is unsafe or malformed (traversal, links, bomb caps, unknown format)."""

    code = "archive_rejected"


class ArchiveTooLarge(ArchiveRejected):
    code = "archive_too_large"


class AdapterTooLarge(InvalidAdapter):
    """The adapter's parameters would take more memory than the cap allows."""

    code = "adapter_too_large"


class BaseModelMismatch(InvalidAdapter):
    """The adapter was made for another base model than the one it is used with."""

    code = "base_model_mismatch"


class HubError(StoreError):
    """A hub repository or revision that does not exist, or a bad subfolder."""

    code = "hub_error"


class HubUnavailable(StoreError):
    """The hub cannot be reached (offline, network, server error) and nothing is cached."""

    code = "hub_unavailable"


class InvalidRoute(StoreError):
    """A malformed alias or traffic split."""

    code = "invalid_route"


class VersionInUse(StoreError):
    """A version (or alias) that an alias or the traffic split still points at."""

    code = "version_in_use"


class InvalidCursor(StoreError):
    """A page cursor not issued by this server, or issued for other filters (listing.py)."""

    code = "validation_error"  # the protocols' 422, as for any malformed request
