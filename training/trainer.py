"""train_adapter: train an adapter (or fully fine-tune, for comparison), evaluate, store it.

Nothing reaches the store unless the whole run succeeded: the adapter is saved to a temporary
folder and handed to ``AdapterStore.add`` (itself atomic) as the very last step. A stop request
or any failure before that leaves the store exactly as it was.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from adapters_store import AdapterExists, AdapterStore, BaseModelRef, Manifest
from training import data as data_mod
from training.callbacks import Progress, ReportCallback, ShouldStop, silence_adapters_warning
from training.config import TrainConfig, parse_adapter_config
from training.curves import BestKeeper, CurveRecorder
from training.errors import TrainingCancelled, TrainingError
from training.heads import add_head, final_metrics, fold_target_scale, head_fields
from training.metrics import select_metric, trainer_metrics
from training.modeling import (
    count_parameters,
    flatten_prefix,
    load_base,
    model_key,
    resolve_device,
    save_adapter_files,
    save_full,
)
from training.plots import write_curves_file
from training.recipes import Schedule, schedule
from training.validation import validate_config

__all__ = ["TrainingCancelled", "TrainingError", "train_adapter", "validate_config"]


def train_adapter(
    config: TrainConfig,
    *,
    store: AdapterStore,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    device: str | None = None,
    progress_bar: bool = False,
    data_roots: list | None = None,
    allow_hub: bool = True,
) -> Manifest:
    """Train per `config`, evaluate, and store the adapter; return its manifest.

    For method "full" the fine-tuned model goes to `config.full_output_dir` instead and the
    returned Manifest (adapter_config "full", not stored) describes it; see `save_full`.
    `data_roots` and `allow_hub`: the server's dataset rules, checked again where the job runs.
    """
    validate_config(config, store=store, data_roots=data_roots, allow_hub=allow_hub)
    silence_adapters_warning()
    device = resolve_device(device)
    _stop_check(should_stop)
    checked = data_mod.check_data(config)  # data errors surface before the model loads
    config = config.filled(checked.task)  # the default recipe: the task's
    base = load_base(config.base_model)
    prepared = data_mod.prepare_data(config, base.tokenizer, checked)
    _stop_check(should_stop)
    counts = _setup_model(base.model, config, prepared.label_names, prepared.task)
    plan = schedule(config, len(prepared.train))
    with tempfile.TemporaryDirectory(prefix="train-") as work:
        run = _build_trainer(config, plan, base, prepared, work, device, progress_bar)
        run.report.progress, run.report.should_stop = progress, should_stop
        train_metrics = run.trainer.train().metrics
        if run.report.cancelled:
            raise TrainingCancelled("training was cancelled")
        eval_metrics = _best_eval(run)
        fold_target_scale(base.model, model_key(config.name), prepared.target_scale)
        _stop_check(should_stop)
        if progress is not None:
            progress({**_state_event(run.trainer.state), "phase": "save"})
    head = head_fields(config, prepared, run.keeper.best_details)
    metrics = final_metrics(train_metrics, eval_metrics, prepared, run.keeper.best_details)
    training = _training_record(config, counts, prepared, device)
    training.update(_run_record(run, plan))
    ref = BaseModelRef(id=base.model_id, fingerprint=base.fingerprint)
    if config.method == "full":
        return save_full(base, config, ref=ref, labels=prepared.label_names, metrics=metrics,
                         training=training, head=head)  # fmt: skip
    return _store_adapter(
        base.model, config, store, ref=ref, metrics=metrics, training=training, head=head
    )


def _stop_check(should_stop: ShouldStop | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training was cancelled")


def _setup_model(
    model: Any, config: TrainConfig, label_names: list[str], task: str
) -> dict[str, int]:
    from transformers import set_seed

    set_seed(config.seed)
    key = model_key(config.name)
    if config.method == "adapter":
        model.add_adapter(key, config=_adapter_config(config))
    add_head(model, key, label_names, task)
    if config.method == "adapter":
        model.train_adapter(key)
    else:
        model.freeze_model(False)
    return count_parameters(model)


def _adapter_config(config: TrainConfig) -> Any:
    from adapters import AdapterConfig

    return AdapterConfig.load(parse_adapter_config(config.adapter_config))


@dataclass
class _Run:
    trainer: Any
    report: ReportCallback
    recorder: CurveRecorder
    keeper: BestKeeper


def _build_trainer(
    config: TrainConfig, plan: Schedule, base: Any, prepared: Any, work: str, device: str,
    progress_bar: bool,
) -> _Run:  # fmt: skip
    from adapters import AdapterTrainer
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    args = training_arguments(config, plan, work, device=device, progress_bar=progress_bar)
    metric = select_metric(prepared.task, text_pair=config.text_pair_column is not None,
                           num_labels=len(prepared.label_names))  # fmt: skip
    compute = trainer_metrics(len(prepared.label_names), prepared.task, prepared.target_scale)
    keeper = BestKeeper(base.model, patience=plan.patience, min_step=plan.min_stop_step,
                        metric=metric, details=lambda: compute.last_details)  # fmt: skip
    run = _Run(None, ReportCallback(None, None, metric), CurveRecorder(metric), keeper)
    cls = AdapterTrainer if config.method == "adapter" else Trainer
    run.trainer = cls(
        model=base.model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.eval,
        data_collator=DataCollatorWithPadding(base.tokenizer),
        compute_metrics=compute,
        callbacks=[run.recorder, run.keeper, run.report],
    )
    run.trainer.remove_callback(PrinterCallback)
    return run


def training_arguments(
    config: TrainConfig, plan: Schedule, work: str, *, device: str = "cpu",
    progress_bar: bool = False,
) -> Any:  # fmt: skip
    """The TrainingArguments of a filled config (`TrainConfig.filled`) and its schedule."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=work,
        overwrite_output_dir=True,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=plan.max_steps,
        lr_scheduler_type=config.lr_scheduler,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        logging_strategy="steps",
        logging_steps=plan.logging_steps,
        eval_strategy="steps" if plan.evaluates else "no",
        eval_steps=plan.eval_steps if plan.evaluates else None,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        disable_tqdm=not progress_bar,
        label_names=["labels"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        group_by_length=bool(config.group_by_length),
    )


def _best_eval(run: _Run) -> dict[str, Any]:
    """Evaluate the last step unless already done, then restore the best evaluated weights."""
    state = run.trainer.state
    if int(state.global_step) not in run.keeper.evaluated_steps:
        run.trainer.evaluate()
    run.keeper.restore()
    if run.keeper.best_metrics is None:  # no score at all (cannot happen with our metrics)
        return run.trainer.evaluate()
    return run.keeper.best_metrics


def _run_record(run: _Run, plan: Schedule) -> dict[str, Any]:
    keeper = run.keeper
    return {
        "total_steps": plan.total_steps,
        "steps_run": int(run.trainer.state.global_step),
        "eval_every_steps": plan.eval_steps,
        "best_step": keeper.best_step,
        "stopped_early": keeper.stopped_early,
        "curves": run.recorder.curves(
            best_step=keeper.best_step, stopped_early=keeper.stopped_early
        ),
    }


def _state_event(state: Any) -> dict[str, Any]:
    return {
        "step": int(state.global_step),
        "total_steps": int(state.max_steps),
        "epoch": float(state.epoch or 0.0),
        "loss": None,
        "eval": None,
    }


def _training_record(
    config: TrainConfig, counts: dict[str, int], prepared: Any, device: str
) -> dict[str, Any]:
    record = config.model_dump(mode="json")
    record.update(
        label_names=prepared.label_names,
        task=prepared.task,
        target_scale=prepared.target_scale,
        eval_split=prepared.eval_split,  # None: carved from train (maybe by default)
        train_samples=len(prepared.train),
        eval_samples=len(prepared.eval),
        device=device,
        **counts,
    )
    return record


def _store_adapter(
    model: Any,
    config: TrainConfig,
    store: AdapterStore,
    *,
    ref: BaseModelRef,
    metrics: dict[str, float],
    training: dict[str, Any],
    head: dict[str, Any],
) -> Manifest:
    flatten_prefix(model, model_key(config.name))  # training is over: keep what serving needs
    with tempfile.TemporaryDirectory(prefix="adapter-") as tmp:
        save_adapter_files(model, tmp, model_key(config.name))
        write_curves_file(training, tmp, title=f"{config.name} ({config.adapter_config_name})")
        try:
            return store.add(
                config.name,
                tmp,
                base_model=ref,
                source="trained",
                adapter_config=config.adapter_config_name,
                metrics=metrics,
                training=training,
                overwrite=config.overwrite,
                head=head,
            )
        except AdapterExists as exc:
            raise TrainingError(exc.message, code="adapter_exists") from None
