"""Evaluation during training: the best evaluated weights are stored, not the last, and a run
whose eval metric stalls stops early (patience)."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState

from adapters_store import AdapterStore
from tests.training.test_train import LABELS, make_config
from training.curves import BestKeeper, CurveRecorder, thin
from training.predict import evaluate, load_stored
from training.trainer import train_adapter


def _evaluate(keeper, state, control, model, step, accuracy):
    with torch.no_grad():
        model.weight.fill_(float(step))  # the weights "after" this step
    state.global_step = step
    return keeper.on_evaluate(None, state, control, metrics={"eval_accuracy": accuracy})


def test_best_keeper_restores_the_best_step_and_stops_after_patience():
    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)  # frozen weights are neither copied nor restored
    keeper = BestKeeper(model, patience=2)
    state, control = TrainerState(max_steps=100), TrainerControl()
    for step, accuracy in [(10, 0.6), (20, 0.8), (30, 0.8), (40, 0.7)]:
        control = _evaluate(keeper, state, control, model, step, accuracy)
    assert keeper.best_step == 20 and keeper.best_score == 0.8  # a tie keeps the earlier step
    assert keeper.stopped_early and control.should_training_stop  # 2 evals without a gain
    assert model.weight.eq(40.0).all()
    assert keeper.restore()
    assert model.weight.eq(20.0).all()  # the weights of step 20, not the last ones


def test_no_early_stop_before_min_step():
    model = torch.nn.Linear(2, 2)
    keeper = BestKeeper(model, patience=1, min_step=50)
    state, control = TrainerState(max_steps=100), TrainerControl()
    for step, accuracy in [(10, 0.5), (20, 0.5), (30, 0.5), (40, 0.5)]:
        control = _evaluate(keeper, state, control, model, step, accuracy)
    assert not control.should_training_stop  # at chance early on: no verdict yet
    control = _evaluate(keeper, state, control, model, 50, 0.5)
    assert control.should_training_stop and keeper.stopped_early


def test_best_keeper_without_patience_never_stops():
    model = torch.nn.Linear(2, 2)
    keeper = BestKeeper(model, patience=0)
    state, control = TrainerState(max_steps=100), TrainerControl()
    for step in range(1, 20):
        control = _evaluate(keeper, state, control, model, step, 0.5)
    assert not keeper.stopped_early and not control.should_training_stop
    assert keeper.best_step == 1


def test_thin_keeps_the_last_point_and_the_limit():
    points = [{"step": s} for s in range(1, 2502)]
    kept = thin(points, limit=1000)
    assert len(kept) <= 1000 and kept[0]["step"] == 1 and kept[-1]["step"] == 2501
    assert thin(points[:10], limit=1000) == points[:10]
    assert CurveRecorder().curves(best_step=None, stopped_early=False)["train"] == []


@pytest.mark.timeout(300)
def test_a_stalled_run_stops_early_and_stores_the_logged_best(
    tmp_path, tiny_model_dir, keyword_dir
):
    store = AdapterStore(tmp_path / "store")
    config = make_config(
        tiny_model_dir, keyword_dir, name="stalled", learning_rate=1e-9, lr_scheduler="constant",
        warmup_ratio=0.0, max_steps=30, eval_steps=4, early_stopping_patience=2,
    )  # fmt: skip
    manifest = train_adapter(config, store=store)
    training, curves = manifest.training, manifest.training["curves"]
    # lr 1e-9: the accuracy never improves after the first evaluation -> stop 2 evals later
    # and not before step 15, half of the run
    assert [p["step"] for p in curves["eval"]] == [4, 8, 12, 16]
    assert training["stopped_early"] and curves["stopped_early"]
    assert training["steps_run"] == 16 < training["total_steps"] == 30
    assert training["best_step"] == curves["best_step"] == 4
    best = curves["eval"][0]
    assert manifest.metrics["accuracy"] == pytest.approx(best["accuracy"])
    # the stored adapter, loaded afresh, scores what the log says the best step scored
    from training.data import Columns, load_labelled

    texts, gold = load_labelled(str(keyword_dir), split="test", columns=Columns("text", "label"),
                                names=LABELS)  # fmt: skip
    scored = evaluate(load_stored(store, "stalled"), texts, gold)
    assert scored["accuracy"] == pytest.approx(best["accuracy"])
    assert scored["eval_loss"] == pytest.approx(best["loss"], rel=1e-4)
