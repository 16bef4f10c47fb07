"""Flower ``ClientApp`` of the comparison: fedsilo's trainer behind Flower's messages.

It lives in its own module (not in ``flower_sim.py``, which runs as ``__main__``) because Ray
workers import the client functions by module name; ``PYTHONPATH`` holds the repository root.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from bench import _federation
from fl_core.config import FederationConfig
from fl_core.exchange.histograms import class_histogram
from fl_core.metrics import ClassHistogram, auroc_from_histogram

client_app = ClientApp()


@cache
def _config(config_json: str) -> FederationConfig:
    return FederationConfig.model_validate_json(config_json)


@cache
def _site(config_json: str, partition_id: int) -> Any:
    """Each hospital's data, loaded once per Ray worker as fedsilo's workers load theirs."""
    return _federation.load_site(_config(config_json), partition_id)


@cache
def _trainer(config_json: str) -> Any:
    """One trainer per worker process, shared by the hospitals it serves (as in fedsilo)."""
    torch.set_num_threads(1)
    return _federation.new_trainer(_config(config_json))


def _state(message: Message) -> tuple[str, Any, Any, dict[str, np.ndarray]]:
    config_record = message.content["config"]
    config_json = str(config_record["federation"])
    arrays = message.content["arrays"].to_torch_state_dict()
    weights = {name: tensor.numpy() for name, tensor in arrays.items()}
    return config_json, _config(config_json), _trainer(config_json), weights


@client_app.train()
def train(message: Message, context: Context) -> Message:
    config_json, config, trainer, weights = _state(message)
    site = _site(config_json, int(context.node_config["partition-id"]))
    round_index = int(message.content["config"]["server-round"])
    local, num_examples, loss = _federation.train_site(trainer, site, weights, config, round_index)
    arrays = ArrayRecord({name: torch.from_numpy(array) for name, array in local.items()})
    metrics = MetricRecord({"num-examples": num_examples, "train_loss": loss})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """The same evaluation report a fedsilo hospital makes: loss sum and class histograms."""
    config_json, config, trainer, weights = _state(message)
    site = _site(config_json, int(context.node_config["partition-id"]))
    trainer.set_weights(weights)
    report = trainer.evaluate(site.test, config.evaluation.histogram_bins)
    histogram = class_histogram(report.histogram)  # Flower sums dense lists, bin by bin
    metrics = MetricRecord(
        {
            "num-examples": max(report.num_examples, 1),
            "loss_sum": report.loss_sum,
            "positives": histogram.positives.tolist(),
            "negatives": histogram.negatives.tolist(),
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def sum_histograms(replies: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Pooled AUROC from the summed histograms (Flower's default would average the bins)."""
    del weighting_key
    records = [reply["metrics"] for reply in replies]
    histogram = ClassHistogram(
        np.sum([np.asarray(r["positives"], np.int64) for r in records], axis=0),
        np.sum([np.asarray(r["negatives"], np.int64) for r in records], axis=0),
    )
    auroc = auroc_from_histogram(histogram)
    return MetricRecord({"auroc": float("nan") if auroc is None else auroc})
