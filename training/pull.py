"""`python -m training pull REPO_ID --name NAME --store DIR`: an adapter from the hub, checked
against the base model exactly as the server checks an upload (adapters_store.hub)."""

from __future__ import annotations

import argparse
import functools

from adapters_store import AdapterStore, BaseModelRef, Manifest
from adapters_store.fit import check_adapter_fits
from adapters_store.format import ADAPTER_CONFIG, read_json
from adapters_store.hub import download, import_from_hub


def add_parser(sub: argparse._SubParsersAction) -> None:
    pull = sub.add_parser("pull", help="import an adapter from the Hugging Face hub into a store")
    pull.add_argument("repo_id", help="e.g. AdapterHub/roberta-base-pf-imdb")
    pull.add_argument("--name", required=True, help="the adapter's name in the store")
    pull.add_argument("--store", required=True, help="adapter store directory")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    pull.add_argument("--subfolder", default=None, help="the adapter's folder in the repo")
    pull.add_argument(
        "--base-model", default=None, help="default: the model named in adapter_config.json"
    )
    pull.add_argument("--overwrite", action="store_true", help="replace (new version)")
    pull.add_argument("--token", default=None, help="hub token (default: the logged-in one)")


def pull_adapter(
    store: AdapterStore,
    name: str,
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    token: str | None = None,
) -> Manifest:
    from training.modeling import load_base

    if base_model is None:
        folder, _ = download(repo_id, revision=revision, subfolder=subfolder, token=token)
        base_model = str(read_json(folder / ADAPTER_CONFIG).get("model_name") or "roberta-base")
    base = load_base(base_model)
    config = base.model.config
    expected = BaseModelRef(
        id=base.model_id,
        fingerprint=base.fingerprint,
        model_type=config.model_type,
        hidden_size=config.hidden_size,
    )
    return import_from_hub(
        store,
        name,
        repo_id,
        revision=revision,
        subfolder=subfolder,
        expected_base=expected,
        check=functools.partial(check_adapter_fits, config),
        overwrite=overwrite,
        token=token,
    )


def pull(args: argparse.Namespace) -> int:
    manifest = pull_adapter(
        AdapterStore(args.store),
        args.name,
        args.repo_id,
        revision=args.revision,
        subfolder=args.subfolder,
        base_model=args.base_model,
        overwrite=args.overwrite,
        token=args.token,
    )
    hub = manifest.hub
    commit = hub.commit[:12] if hub else "?"
    labels = ", ".join(manifest.labels[i] for i in sorted(manifest.labels))
    print(f"pulled {args.repo_id}@{commit} into {args.store}/{manifest.name} "
          f"(version {manifest.version}, {manifest.adapter_config}; labels: {labels})")  # fmt: skip
    return 0
