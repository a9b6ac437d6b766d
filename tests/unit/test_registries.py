"""The registries of adapters_store (methods, module containers, tasks) are the only
declarations, and what reads them agrees with them."""

from __future__ import annotations

import re
from pathlib import Path

from adapters_store.methods import (
    ADAPTER_CONTAINERS,
    DEFAULT_METHOD,
    METHOD_NAMES,
    METHODS,
    adapter_name_at,
    is_base_parameter,
)
from adapters_store.tasks import HEAD_TASKS, HEAD_TYPES, TASKS

REPO = Path(__file__).resolve().parents[2]
TREE = ("app", "training", "adapters_store", "bench")


def test_every_method_is_a_config_of_the_adapters_library() -> None:
    from adapters import ADAPTER_CONFIG_MAP

    assert set(METHOD_NAMES) <= set(ADAPTER_CONFIG_MAP)
    assert DEFAULT_METHOD in METHODS


def test_training_and_its_recipes_read_the_registry() -> None:
    from training.config import NAMED_ADAPTER_CONFIGS, TrainConfig
    from training.recipes import recipe_values

    assert NAMED_ADAPTER_CONFIGS == METHOD_NAMES
    assert TrainConfig.model_fields["adapter_config"].default == DEFAULT_METHOD
    for name, method in METHODS.items():
        values = recipe_values("default", method="adapter", adapter_config=name)
        assert values["learning_rate"] == method.learning_rate


def test_tasks_and_head_kinds() -> None:
    assert TASKS == ("single_label", "multi_label", "regression")
    assert set(HEAD_TASKS.values()) <= set(TASKS) and set(HEAD_TASKS) == HEAD_TYPES


def _declarations(pattern: str) -> list[str]:
    found = []
    for package in TREE:
        for path in sorted((REPO / package).rglob("*.py")):
            if re.search(pattern, path.read_text()):
                found.append(str(path.relative_to(REPO)))
    return found


def test_the_task_literal_is_written_once() -> None:
    assert _declarations(r'Literal\[\s*"single_label"') == ["adapters_store/tasks.py"]


def test_the_method_and_container_lists_are_written_once() -> None:
    # the registry declares methods one Method(...) at a time: no tuple of them anywhere
    assert _declarations(r'"double_seq_bn",\s*"par_bn"') == []
    assert _declarations(r'"prefix_tunings",?\s') == ["adapters_store/methods.py"]


def test_an_adapter_name_is_found_after_a_container() -> None:
    parts = "roberta.encoder.layer.0.output.adapters.mine.adapter_down.0.weight".split(".")
    assert [i for i in range(len(parts)) if adapter_name_at(parts, i)] == [parts.index("mine")]
    assert adapter_name_at(["heads", "mine", "1", "weight"], 1)
    assert "heads" in ADAPTER_CONTAINERS


def test_base_parameters_are_exactly_the_model_before_adapters(tiny_model_dir) -> None:
    """Adapters of every registered method (and UniPELT, whose gates the fingerprint once
    counted as base weights) leave the base parameters as they were."""
    from adapters import AutoAdapterModel

    model = AutoAdapterModel.from_pretrained(tiny_model_dir)
    before = set(model.state_dict())
    for name in (*METHOD_NAMES, "unipelt"):
        model.add_adapter(f"a_{name}", config=name)
        model.add_classification_head(f"a_{name}", num_labels=2)
    after = model.state_dict()
    assert {k for k in after if is_base_parameter(k)} == before
