"""Store names with '.' and '_' map to distinct modules inside the model."""

from __future__ import annotations

import pytest

from adapters_store import AdapterStore
from app.serving.engine import Engine, Segment, module_name
from tests.support.adapters import AdapterFactory


@pytest.mark.parametrize(
    ("first", "second"), [("a.b", "a_b"), ("x.y_z", "x_y.z"), ("a__b", "a_.b"), ("v1.0", "v1_0")]
)
def test_module_names_are_distinct_and_dot_free(first, second):
    assert module_name(first) != module_name(second)
    assert "." not in module_name(first) and "." not in module_name(second)


def test_dotted_and_underscored_adapters_serve_their_own_outputs(tiny_model_dir, tmp_path):
    factory = AdapterFactory(tiny_model_dir)
    store = AdapterStore(tmp_path / "store")
    engine = Engine.load(base_model=str(tiny_model_dir), max_length=64)
    ids = engine.tokenize(["a good film", "an awful plot"])
    alone = {}
    for seed, name in enumerate(["sent.v1", "sent_v1"], start=3):
        factory.add_to_store(store, name, seed=seed)
        engine.load_adapter(name, store.get(name).path)
        alone[name] = engine.forward([Segment(adapter=name, ids=ids)])[0]
    assert alone["sent.v1"] != alone["sent_v1"]
    both = engine.forward([Segment(adapter=n, ids=ids) for n in ["sent.v1", "sent_v1"]])
    assert both == [alone["sent.v1"], alone["sent_v1"]]
    assert engine.has_adapter("sent.v1") and engine.unload_adapter("sent.v1")
    assert not engine.has_adapter("sent.v1") and engine.has_adapter("sent_v1")
