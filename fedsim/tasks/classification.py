"""Supervised image classification at each hospital: local SGD, local and global evaluation."""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from fedsim.config import TrainConfig
from fedsim.data.arrays import ImageSet
from fedsim.data.federation import Federation
from fedsim.metrics import accuracy, balanced_accuracy, cross_entropy, macro_auc
from fedsim.models import ModelFactory
from fedsim.privacy.dp_sgd import DPSGD
from fedsim.params import Params
from fedsim.torch_params import load_params, params_of
from fedsim.protocol import LocalPlan, LocalResult
from fedsim.tasks.base import Task
from fedsim.tasks.worker_local import WorkerLocalTorch


class ClassificationTask(WorkerLocalTorch, Task):
    """One hospital's work: `epochs` of mini-batch SGD on its own images, shuffled by its seed.

    Honours every LocalPlan term: `mu` (FedProx's proximal term), `gradient_correction`
    (SCAFFOLD) and `fairness_lambda` with `global_loss` (FedMRL's fairness term, see
    `fairness_term`). The locally trained model is also scored on the hospital's own test split
    ("local_accuracy" in clients.parquet). Global evaluation covers the dataset's test split and,
    where it has one, its validation split (val_* metrics: what a learning strategy may use).
    With `dp_sgd` set, every local step is DP-SGD through Opacus (fedsim.privacy.dp_sgd).
    """

    worker_local = ("_model",)

    global_metric_names = (
        "loss", "accuracy", "balanced_accuracy", "macro_auc", "val_loss", "val_accuracy", "val_balanced_accuracy"
    )
    headline_metric = "accuracy"
    hospital_metric = "accuracy"

    def __init__(
        self, federation: Federation, model_factory: ModelFactory, train: TrainConfig, eval_batch_size: int, dp_sgd: DPSGD | None = None
    ) -> None:
        self.federation = federation
        self.dp_sgd = dp_sgd
        self.model_factory = model_factory
        self.train_config = train
        self.eval_batch_size = eval_batch_size
        self._device = torch.device("cpu")
        self._model: nn.Module | None = None  # built lazily on each worker, never pickled

    # ----- shape of the federation ---------------------------------------------------------
    @property
    def num_hospitals(self) -> int:
        return self.federation.num_hospitals

    def hospital_sizes(self) -> np.ndarray:
        return np.array([len(part) for part in self.federation.train_parts], dtype=np.int64)

    def normalization_keys(self) -> frozenset[str]:
        model = self.new_module()
        keys = set()
        for prefix, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                keys.update(f"{prefix}.{name}" for name in module.state_dict())
        return frozenset(keys)

    def partition_table(self) -> pa.Table:
        return self.federation.statistics()

    def use_device(self, device: str) -> None:
        self._device = torch.device(device)
        self._model = None

    def new_module(self) -> nn.Module:
        dataset = self.federation.dataset
        return self.model_factory(dataset.channels, dataset.num_classes)

    def _placed_model(self) -> nn.Module:
        """A new model on this worker's device, channels-last: about 1.6x faster convolutions on
        CPU for the small batches of local training (measured on the small CNN, 1 thread)."""
        return self.new_module().to(self._device, memory_format=torch.channels_last)

    def _model_with(self, params: Params) -> nn.Module:
        if self._model is None:
            self._model = self._placed_model()
        load_params(self._model, params)
        return self._model

    def initial_params(self, seed: int) -> Params:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return params_of(self.new_module())

    def _tensors(self, hospital: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.federation.hospital_arrays(hospital, split)  # type: ignore[arg-type]
        return torch.from_numpy(images).to(self._device), torch.from_numpy(labels).to(self._device)

    # ----- local work ----------------------------------------------------------------------
    def train(self, hospital: int, params: Params, plan: LocalPlan, state: Any, seed: int) -> LocalResult:
        config, epochs, mu, global_loss = self.train_config, plan.epochs, plan.mu, plan.global_loss
        fairness = plan.fairness_lambda if np.isfinite(global_loss) else 0.0
        correction = self._on_device(plan.gradient_correction)
        images, labels = self._tensors(hospital, "train")
        model = self._model_with(params)
        model.train()
        trained = dict(model.named_parameters())
        anchor = self._anchor(trained, plan.proximal_anchor) if mu > 0 else {}
        count = len(labels)
        generator = torch.Generator().manual_seed(seed)
        loss_sum, steps, seen = 0.0, 0, 0
        for phase_epochs, parameters in training_phases(trained, plan):
            optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
            private = self.dp_sgd.attach(model, optimizer, count, config.batch_size, seed) if self.dp_sgd else None
            optimizer = private.optimizer if private else optimizer
            for _ in range(phase_epochs):
                for batch in private.batches() if private else shuffled_batches(count, config.batch_size, generator):
                    batch = batch.to(self._device)
                    loss = F.cross_entropy(model(images[batch]), labels[batch])
                    objective = loss + proximal_term(trained, anchor, mu) if mu > 0 else loss
                    if fairness > 0:
                        objective = objective + fairness_term(loss, global_loss, fairness)
                    optimizer.zero_grad(set_to_none=True)
                    objective.backward()
                    if correction:
                        for name, parameter in trained.items():
                            parameter.grad.add_(correction[name])
                    optimizer.step()
                    loss_sum += float(loss.detach()) * len(batch)
                    seen += len(batch)
                    steps += 1
            if private:
                private.detach()
        local = self._score(model, *self._tensors(hospital, "test"))
        metrics = {
            "train_loss": loss_sum / max(1, seen),
            "local_accuracy": local["accuracy"],
            "label_entropy": label_entropy(labels.cpu().numpy(), self.federation.dataset.num_classes),
        }
        return LocalResult(params_of(model), count, steps, metrics)

    def _anchor(self, trained: dict[str, torch.Tensor], given: Mapping[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
        """The proximal term's anchor: the plan's (Ditto's w_global), else the starting point."""
        if given is None:
            return {name: p.detach().clone() for name, p in trained.items()}
        return {name: torch.tensor(np.asarray(given[name]), device=self._device) for name in trained}

    def fine_tune(self, hospital: int, params: Params, steps: int, state: Any, seed: int) -> Params:
        """`steps` mini-batch SGD steps at train.lr (plain cross-entropy) through seeded
        shuffled epochs of the hospital's training split, on a copy of `params`."""
        config = self.train_config
        images, labels = self._tensors(hospital, "train")
        model = self._model_with(params)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        epochs = itertools.repeat(None) if len(labels) else ()
        batches = (batch for _ in epochs for batch in shuffled_batches(len(labels), config.batch_size, generator))
        for batch in itertools.islice(batches, steps):
            batch = batch.to(self._device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
        return params_of(model)

    def train_loss(self, hospital: int, params: Params, state: Any) -> float:
        return self._score(self._model_with(params), *self._tensors(hospital, "train"))["loss"]

    def _on_device(self, arrays: Mapping[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
        if not arrays:
            return {}
        return {name: torch.tensor(np.asarray(array), device=self._device) for name, array in arrays.items()}

    def evaluate_hospital(self, hospital: int, params: Params, state: Any) -> dict[str, float]:
        return self._score(self._model_with(params), *self._tensors(hospital, "test"))

    @torch.no_grad()
    def _probabilities(self, model: nn.Module, images: torch.Tensor, batch_statistics: bool = False) -> np.ndarray:
        model.eval()
        if batch_statistics:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train()
                    module.track_running_stats = False  # normalise by the batch, leave stored stats alone
                    module.running_mean, module.running_var = None, None
        chunks = [
            F.softmax(model(images[start : start + self.eval_batch_size]), dim=1)
            for start in range(0, len(images), self.eval_batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.federation.dataset.num_classes), dtype=np.float32)
        return torch.cat(chunks).float().cpu().numpy()

    def _score(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        probabilities = self._probabilities(model, images)
        truth = labels.cpu().numpy()
        return {
            "accuracy": accuracy(truth, probabilities.argmax(axis=1)),
            "loss": cross_entropy(truth, probabilities),
        }

    # ----- global evaluation ---------------------------------------------------------------
    def _eval_sets(self) -> list[ImageSet]:
        dataset = self.federation.dataset
        return [dataset.test] if dataset.val is None else [dataset.test, dataset.val]

    def _chunks(self, images: ImageSet) -> int:
        return math.ceil(len(images) / self.eval_batch_size)

    def global_eval_units(self) -> int:
        """Test-split chunks, then validation-split chunks (fixed size, so any worker split agrees)."""
        return sum(self._chunks(split) for split in self._eval_sets())

    def evaluate_unit(self, unit: int, params: Params, batch_statistics: bool = False) -> np.ndarray:
        split = self.federation.dataset.test
        test_units = self._chunks(split)
        if unit >= test_units:
            split, unit = self.federation.dataset.val, unit - test_units  # type: ignore[assignment]
        start = unit * self.eval_batch_size
        images = split.images[start : start + self.eval_batch_size].astype(np.float32) / 255.0
        if batch_statistics:  # a throwaway model: this mode strips the BN layers' stored statistics
            model = self._placed_model()
            load_params(model, params)
        else:
            model = self._model_with(params)
        return self._probabilities(model, torch.from_numpy(images).to(self._device), batch_statistics)

    def global_metrics(self, outputs: list[np.ndarray]) -> dict[str, float]:
        dataset = self.federation.dataset
        test_units = self._chunks(dataset.test)
        probabilities = np.concatenate(outputs[:test_units])
        labels = dataset.test.labels
        predictions = probabilities.argmax(axis=1)
        metrics = {
            "loss": cross_entropy(labels, probabilities),
            "accuracy": accuracy(labels, predictions),
            "balanced_accuracy": balanced_accuracy(labels, predictions),
            "macro_auc": macro_auc(labels, probabilities),
            "val_loss": float("nan"),
            "val_accuracy": float("nan"),
            "val_balanced_accuracy": float("nan"),
        }
        if dataset.val is not None:
            val_probabilities = np.concatenate(outputs[test_units:])
            metrics["val_loss"] = cross_entropy(dataset.val.labels, val_probabilities)
            val_predictions = val_probabilities.argmax(axis=1)
            metrics["val_accuracy"] = accuracy(dataset.val.labels, val_predictions)
            metrics["val_balanced_accuracy"] = balanced_accuracy(dataset.val.labels, val_predictions)
        return metrics

def training_phases(trained: dict[str, torch.Tensor], plan: LocalPlan) -> list[tuple[int, list[torch.Tensor]]]:
    """(epochs, parameters the optimiser steps) in order: every parameter for `plan.epochs`, or
    FedRep's rule (Collins et al. 2021) with `plan.head_keys`: the head alone for
    `plan.head_epochs` (the body frozen), then the body alone for `plan.epochs`."""
    if not plan.head_keys:
        return [(plan.epochs, list(trained.values()))]
    head = [p for name, p in trained.items() if name in plan.head_keys]
    body = [p for name, p in trained.items() if name not in plan.head_keys]
    return [(plan.head_epochs, head), (plan.epochs, body)]


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of mini-batches: a seeded permutation cut into batch_size pieces."""
    order = torch.randperm(count, generator=generator)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def fairness_term(loss: torch.Tensor, global_loss: float, strength: float) -> torch.Tensor:
    """FedMRL's fairness term, lambda * (L_h - L_global)^2, on the batch loss L_h and the global
    loss the server broadcast. Gradient: 2 * lambda * (L_h - L_global) * grad L_h — it pushes a
    hospital's loss towards the global one (down when above it, and, less usefully, up when below;
    the square keeps it smooth where an absolute gap would not be)."""
    return strength * (loss - global_loss) ** 2


def label_entropy(labels: np.ndarray, num_classes: int) -> float:
    """Entropy of a hospital's label distribution over log(num_classes): 0 one class, 1 balanced."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    shares = counts[counts > 0] / max(1.0, counts.sum())
    return float(-(shares * np.log(shares)).sum() / np.log(num_classes))


def proximal_term(parameters: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's (mu/2) * ||w - w_global||^2 over trained parameters; gradient mu * (w - w_global)."""
    return 0.5 * mu * sum(torch.sum((parameters[name] - anchor[name]) ** 2) for name in anchor)
