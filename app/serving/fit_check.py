"""The base-model fit check lives in `adapters_store.fit` (the training CLI's `pull` uses it
too); re-exported here for the serving side."""

from adapters_store.fit import check_adapter_fits

__all__ = ["check_adapter_fits"]
