"""The adapter store as every process opens it: one construction, from the store's view.

The API, the training worker, the Ray replicas and the Ray ingress all open the store here,
so they agree on its limits (APP_MAX_ADAPTER_PARAM_BYTES, APP_KEEP_VERSIONS).
"""

from __future__ import annotations

from adapters_store import AdapterStore
from app.config_views import StoreView


def open_store(view: StoreView) -> AdapterStore:
    return AdapterStore(
        view.adapters_dir,
        max_param_bytes=view.max_adapter_param_bytes,
        keep_versions=view.keep_versions,
    )
