"""Adapters of every task type, single texts and sentence pairs, mixed in one pass (issue 21).

Every served row is compared with the library's own path for that adapter alone (the whole
AdapterModel under `AdapterSetup`, one input at a time, pairs encoded by the tokenizer as the
text-classification pipeline encodes them), within 1e-5: the raw logits, and the scores of each
task (softmax, sigmoid, the regression number) computed by torch from the library's logits.
Both ways an adapter can be active are covered: the library's own modules (`load_adapter`)
and the re-used slots of the adapter cache (`run_batch`).
"""

from __future__ import annotations

import pytest
import torch
from adapters import AdapterSetup

from adapters_store import AdapterStore
from adapters_store.rendering import Head, over_threshold, scores
from app.serving.adapter_cache import AdapterCache
from app.serving.engine import Engine, Segment
from app.serving.errors import TextTooLong
from app.serving.passes import run_batch
from tests.support.tasks import add_task_adapter

TOL = 1e-5
INPUTS = [
    "a good film",
    ("the plot was awful", "the acting was poor and the plot was awful"),
    "great",
    ("one two three", "three"),
    ("my phone battery is terrible", "the screen is bad but the price was great"),
]
EMOTIONS = {0: "joy", 1: "anger", 2: "fear", 3: "love"}
# name -> (task, method, labels, thresholds, text_pair)
ADAPTERS = {
    "single": ("single_label", "seq_bn", {0: "neg", 1: "neu", 2: "pos"}, None, False),
    "paraphrase": ("single_label", "par_bn", {0: "no", 1: "yes"}, None, True),
    "emotions": ("multi_label", "lora", EMOTIONS, {0: 0.3, 2: 0.7}, False),
    "topics": ("multi_label", "prefix_tuning", {i: f"t{i}" for i in range(5)}, None, False),
    "stsb": ("regression", "seq_bn", {0: "similarity"}, None, True),
    "rating": ("regression", "ia3", {0: "stars"}, None, False),
}


@pytest.fixture(scope="module")
def store(factory, tmp_path_factory) -> AdapterStore:
    store = AdapterStore(tmp_path_factory.mktemp("tasks") / "store")
    for seed, (name, (task, method, labels, thresholds, pair)) in enumerate(ADAPTERS.items()):
        add_task_adapter(
            factory, store, name, task=task, seed=60 + seed, config=method, labels=labels,
            thresholds=thresholds, text_pair=pair,
        )  # fmt: skip
    return store


@pytest.fixture(scope="module")
def alone(store, tiny_model_dir) -> dict[tuple[str, object], list[float]]:
    """The library alone: each adapter loaded by itself, one input, its head's logits."""
    oracle = Engine.load(base_model=str(tiny_model_dir), max_length=64)
    out = {}
    for name in ADAPTERS:
        oracle.load_adapter(name, store.get(name).path)
        module = oracle.module_of(name)
        for item in INPUTS:
            args = [item] if isinstance(item, str) else list(item)
            batch = oracle.tokenizer(*args, return_tensors="pt", truncation=True, max_length=64)
            with torch.inference_mode(), AdapterSetup(module, head_setup=module):
                out[name, item] = oracle.model(**batch).logits[0].tolist()
        oracle.unload_adapter(name)
    return out


def _plan() -> list[tuple[str, list]]:
    """Every adapter, every kind of input, several adapters met twice, in one pass."""
    names = list(ADAPTERS)
    plan = [(name, INPUTS[i % 3 : i % 3 + 2 + i % 2]) for i, name in enumerate(names)]
    return [*plan, ("emotions", INPUTS[::-1]), ("stsb", INPUTS[:1])]


def _check_rows(store, alone, plan, rows_by_segment) -> None:
    for (name, items), rows in zip(plan, rows_by_segment, strict=True):
        task = ADAPTERS[name][0]
        manifest = store.get(name).manifest
        head = Head(manifest.labels, manifest.task, manifest.thresholds)
        for item, logits in zip(items, rows, strict=True):
            want = torch.tensor(alone[name, item])
            assert logits == pytest.approx(want.tolist(), abs=TOL), (name, item)
            if task == "single_label":
                expected = want.softmax(-1)
            elif task == "multi_label":
                expected = want.sigmoid()
            else:
                expected = want
            assert scores(head, logits) == pytest.approx(expected.tolist(), abs=TOL)
            assert len(logits) == len(ADAPTERS[name][2])


def test_every_task_and_pairs_in_one_pass_match_the_library(tiny_model_dir, store, alone):
    engine = Engine.load(base_model=str(tiny_model_dir), max_length=64)
    for name in ADAPTERS:
        engine.load_adapter(name, store.get(name).path)
    plan = _plan()
    got = engine.forward([Segment(name, engine.tokenize(items)) for name, items in plan])
    _check_rows(store, alone, plan, got)
    # The golden check can fail: a pair and its first text alone give other logits.
    (pair_rows,) = engine.forward([Segment("single", engine.tokenize([INPUTS[1][0], INPUTS[1]]))])
    assert pair_rows[0] != pytest.approx(pair_rows[1], abs=1e-3)


def test_every_task_through_slots_and_the_cache_is_exact(tiny_model_dir, store, alone):
    engine = Engine.load(base_model=str(tiny_model_dir), max_length=64)
    cache = AdapterCache(engine=engine, store=store, max_count=100, max_bytes=1 << 30)
    plan = _plan()
    result = run_batch(engine, cache, [Segment(n, engine.tokenize(i)) for n, i in plan], None)
    rows = []
    for (name, _), outcome in zip(plan, result.outcomes, strict=True):
        assert not isinstance(outcome, BaseException), outcome
        manifest = store.get(name).manifest
        head = Head(manifest.labels, manifest.task, manifest.thresholds)
        assert all(o.head == head for o in outcome)
        rows.append([o.logits for o in outcome])
    assert all(engine.module_of(name).startswith("slot_") for name in ADAPTERS)
    _check_rows(store, alone, plan, rows)


def test_multi_label_thresholds_stored_and_overridden():
    head = Head(EMOTIONS, "multi_label", {0: 0.3, 2: 0.7})
    logits = [-0.4, 0.1, 0.5, -3.0]  # sigmoid: 0.401, 0.525, 0.622, 0.047
    assert over_threshold(head, logits, None) == [1, 0]  # joy over its 0.3; fear under 0.7
    assert over_threshold(head, logits, 0.6) == [2]
    assert over_threshold(head, logits, 0.0) == [2, 1, 0, 3]
    assert over_threshold(Head(EMOTIONS, "multi_label"), logits, None) == [2, 1]


@pytest.mark.parametrize(
    ("function", "expected"),
    [("softmax", [0.5, 0.5]), ("sigmoid", [0.5, 0.5]), ("none", [0.0, 0.0])],
)
def test_function_to_apply_overrides_the_task(function, expected):
    for task in ("single_label", "multi_label"):
        assert scores(Head({0: "a", 1: "b"}, task), [0.0, 0.0], function) == expected
    assert scores(Head({0: "x"}, "regression"), [2.5]) == [2.5]
    assert scores(Head({0: "x"}, "regression"), [0.0], "sigmoid") == [0.5]


def test_pairs_tokenise_as_the_pipeline_and_the_limit_covers_both(tiny_model_dir):
    # 17: an odd budget for the pair's texts, so which text is longer decides the split.
    engine = Engine.load(base_model=str(tiny_model_dir), max_length=17)
    long_a, long_b = "good " * 30, "bad film " * 9 + "x"
    (ids,) = engine.tokenize([(long_a, long_b)])
    want = engine.tokenizer(long_a, long_b, truncation=True, max_length=17)["input_ids"]
    assert ids == want and len(ids) == 17
    short = ("a good film", "great")
    assert engine.tokenize([short], truncation=False)[0] == engine.tokenizer(*short)["input_ids"]
    with pytest.raises(TextTooLong, match=r"inputs\[3\]"):  # each text fits, the pair does not
        engine.tokenize([("good " * 8, "bad " * 8)], truncation=False, first=3)
    # A text of a pair over the cut: the same ids as the tokenizer on the whole texts.
    huge = "a good film " * (engine.char_cap // 6)
    # Longer in tokens than `huge`, but fewer tokens in its first char_cap characters: cutting
    # both would give the odd token to the other side.
    dense = "film " * (engine.char_cap // 5) + "a " * 3000
    pairs = [(huge, "fine"), ("fine", huge), (huge, dense), (dense, huge)]
    for pair in pairs:
        (ids,) = engine.tokenize([pair])
        assert ids == engine.tokenizer(*pair, truncation=True, max_length=17)["input_ids"]
