"""Supervised image classification at each hospital: local SGD, local and global evaluation."""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from fedsim.config import TrainConfig
from fedsim.data.arrays import ImageSet
from fedsim.data.federation import Federation
from fedsim.metrics import accuracy, classification_metric_names, classification_metrics, confusion_matrix
from fedsim.models import ModelFactory
from fedsim.privacy.dp_sgd import DPSGD
from fedsim.params import Params
from fedsim.torch_params import load_params, params_of
from fedsim.protocol import LocalPlan, LocalResult
from fedsim.tasks.base import Task, TrainJob
from fedsim.tasks.local_optim import LocalSGD
from fedsim.tasks.vectorized import HospitalData, VectorizedSGD, shuffled_batches
from fedsim.tasks.worker_local import WorkerLocalTorch


class ClassificationTask(WorkerLocalTorch, Task):
    """One hospital's work: `epochs` of mini-batch SGD on its own images, shuffled by its seed.

    Honours every LocalPlan term: `mu` (FedProx's proximal term), `gradient_correction`
    (SCAFFOLD), `fairness_lambda` with `global_loss` (FedMRL's fairness term, see
    `fairness_term`) and `pooled` (the centralised baseline's site trains on those hospitals'
    training splits concatenated in hospital order, each as its scanner sees it, and shuffled
    together). The locally trained model is also scored on the hospital's own test split (the
    pooled ones' for the site; "local_accuracy" in clients.parquet: a test score, so no strategy
    sees it; "train_accuracy", on the batches as they were trained, is what a strategy may use). Every evaluation gives every
    score of fedsim.metrics.classification_metrics. Global evaluation covers the dataset's test
    split and its validation split (val_* metrics: what a learning strategy may use; carved from
    training where the dataset ships none, see fedsim.data.splits), and writes a confusion matrix of each (`global_tables`: confusion.parquet).
    With `dp_sgd` set, every local step is DP-SGD through Opacus (fedsim.privacy.dp_sgd).
    With `vectorized_hospitals` > 0, a worker trains up to that many hospitals at once as one
    vmapped model (`train_group`, fedsim.tasks.vectorized).
    """

    worker_local = ("_model", "_trainer")

    headline_metric = "accuracy"
    hospital_metric = "accuracy"
    test_report_metrics = frozenset({"local_accuracy"})

    def __init__(
        self, federation: Federation, model_factory: ModelFactory, train: TrainConfig, eval_batch_size: int,
        dp_sgd: DPSGD | None = None, vectorized_hospitals: int = 0,
    ) -> None:
        self.federation = federation
        self.vectorized_hospitals = vectorized_hospitals
        self.dp_sgd = dp_sgd
        self.model_factory = model_factory
        self.train_config = train
        self.eval_batch_size = eval_batch_size
        self._device = torch.device("cpu")
        self._model: nn.Module | None = None  # built lazily on each worker, never pickled
        self._trainer: VectorizedSGD | None = None  # likewise

    # ----- shape of the federation ---------------------------------------------------------
    @property
    def global_metric_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The test split's scores, then the validation split's (val_*; NaN without one)."""
        names = classification_metric_names(self.federation.dataset.num_classes)
        return names + tuple(f"val_{name}" for name in names)

    @property
    def num_hospitals(self) -> int:
        return self.federation.num_hospitals

    def hospital_sizes(self) -> np.ndarray:
        return np.array([len(part) for part in self.federation.train_parts], dtype=np.int64)

    def step_samples(self) -> np.ndarray:
        """A mini-batch (the last of an epoch may be smaller: the budget counts full ones)."""
        return np.full(self.num_hospitals, self.train_config.batch_size, dtype=np.int64)

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
        self._model, self._trainer = None, None

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

    def warm_up(self) -> None:
        """Build this worker's model and run one training-sized forward and backward pass on
        blank images: torch sets up its kernels for these shapes before round 1, not in it. The
        model is reloaded from the broadcast before any use, and the global RNG is left as it was."""
        dataset = self.federation.dataset
        size = dataset.test.images.shape[-1]
        with torch.random.fork_rng(devices=[]):
            model = self._model = self._placed_model()
        model.train()
        # at least 2: BatchNorm refuses one sample in train mode
        images = torch.zeros(max(2, self.train_config.batch_size), dataset.channels, size, size, device=self._device)
        model(images).sum().backward()
        model.zero_grad(set_to_none=True)

    def initial_params(self, seed: int) -> Params:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return params_of(self.new_module())

    def _tensors(self, hospital: int, split: str, pooled: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """The hospital's split, or the `pooled` hospitals' splits concatenated in that order."""
        parts = [self.federation.hospital_arrays(h, split) for h in pooled or (hospital,)]  # type: ignore[arg-type]
        images = parts[0][0] if len(parts) == 1 else np.concatenate([images for images, _ in parts])
        labels = parts[0][1] if len(parts) == 1 else np.concatenate([labels for _, labels in parts])
        return torch.from_numpy(images).to(self._device), torch.from_numpy(labels).to(self._device)

    # ----- local work ----------------------------------------------------------------------
    def train(self, hospital: int, params: Params, plan: LocalPlan, state: Any, seed: int) -> LocalResult:
        config, epochs, mu, global_loss = self.train_config, plan.epochs, plan.mu, plan.global_loss
        fairness = plan.fairness_lambda if np.isfinite(global_loss) else 0.0
        correction = self._on_device(plan.gradient_correction)
        images, labels = self._tensors(hospital, "train", plan.pooled)
        model = self._model_with(params)
        model.train()
        with dropped_units(model, plan.subnetwork):
            trained = dict(model.named_parameters())
            anchor = self._anchor(trained, plan.proximal_anchor) if mu > 0 else {}
            count = len(labels)
            generator = torch.Generator().manual_seed(seed)
            loss_sum, steps, seen, correct = 0.0, 0, 0, 0
            budget = plan.max_steps if plan.max_steps is not None else math.inf
            for phase_epochs, parameters in training_phases(trained, plan):
                if self.dp_sgd:  # Opacus wraps a torch.optim optimizer
                    sgd = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
                    private = self.dp_sgd.attach(model, sgd, count, config.batch_size, seed)
                    optimizer = private.optimizer
                else:
                    private, optimizer = None, LocalSGD(parameters, config)
                for _ in range(phase_epochs):
                    for batch in private.batches() if private else shuffled_batches(count, config.batch_size, generator):
                        if steps >= budget:
                            break
                        batch = batch.to(self._device)
                        logits = model(images[batch])
                        loss = F.cross_entropy(logits, labels[batch])
                        objective = loss + proximal_term(trained, anchor, mu) if mu > 0 else loss
                        if fairness > 0:
                            objective = objective + fairness_term(loss, global_loss, fairness)
                        optimizer.zero_grad(set_to_none=True)
                        objective.backward()
                        if correction:
                            for name, parameter in trained.items():
                                if parameter.grad is not None:  # (a frozen backbone has none)
                                    parameter.grad.add_(correction[name])
                        optimizer.step()
                        loss_sum += float(loss.detach()) * len(batch)
                        correct += int((logits.detach().argmax(dim=1) == labels[batch]).sum())
                        seen += len(batch)
                        steps += 1
                if private:
                    private.detach()
            test_images, test_labels = self._tensors(hospital, "test", plan.pooled)
            test_probabilities = self._probabilities(model, test_images)  # the sub-network, under federated dropout
        trained_params = params_of(model)
        if plan.subnetwork is not None:  # weight decay and BN statistics moved dropped entries: they go back
            trained_params = plan.subnetwork.keep_held(trained_params, params)
        metrics = self._local_metrics(labels, loss_sum, seen, correct, test_labels, test_probabilities)
        return LocalResult(trained_params, count, steps, metrics)

    def train_group(self, jobs: Sequence[TrainJob]) -> list[LocalResult]:
        """`train` for several hospitals at once, vmapped (fedsim.tasks.vectorized; DP-SGD is
        refused with it at config time)."""
        if self._trainer is None:
            self._trainer = VectorizedSGD(self.new_module(), self.train_config, self.eval_batch_size, self._device)
        data = [
            HospitalData(job.params, job.plan, job.seed, self._tensors(job.hospital, "train"), self._tensors(job.hospital, "test"))
            for job in jobs
        ]
        results = []
        for hospital, outcome in zip(data, self._trainer.train(data)):
            labels, test_labels = hospital.train[1], hospital.test[1]
            probabilities = outcome.test_probabilities.reshape(len(test_labels), self.federation.dataset.num_classes)
            metrics = self._local_metrics(labels, outcome.loss_sum, outcome.seen, outcome.correct, test_labels, probabilities)
            results.append(LocalResult(outcome.params, len(labels), outcome.steps, metrics))
        return results

    def _local_metrics(self, labels: torch.Tensor, loss_sum: float, seen: int, correct: int, test_labels: torch.Tensor,
                       test_probabilities: np.ndarray) -> dict[str, float]:
        """What a hospital logs of its local round: training loss and accuracy (on the batches as
        they were trained: what a strategy may use), the trained model's accuracy on its own test
        split (a test score: no strategy sees it), and its label entropy."""
        return {
            "train_loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "local_accuracy": accuracy(test_labels.cpu().numpy(), test_probabilities.argmax(axis=1)),
            "label_entropy": label_entropy(labels.cpu().numpy(), self.federation.dataset.num_classes),
        }

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
        optimizer = LocalSGD(model.parameters(), config)
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

    def evaluate_hospital(self, hospital: int, params: Params, state: Any, batch_statistics: bool = False) -> dict[str, float]:
        return self._score(self._eval_model(params, batch_statistics), *self._tensors(hospital, "test"), batch_statistics)

    def _eval_model(self, params: Params, batch_statistics: bool) -> nn.Module:
        """The model to score `params` with; a throwaway one for batch statistics, since that mode
        strips the BN layers' stored statistics."""
        if not batch_statistics:
            return self._model_with(params)
        model = self._placed_model()
        load_params(model, params)
        return model

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

    def _score(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_statistics: bool = False) -> dict[str, float]:
        return classification_metrics(labels.cpu().numpy(), self._probabilities(model, images, batch_statistics))

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
        return self._probabilities(self._eval_model(params, batch_statistics), torch.from_numpy(images).to(self._device), batch_statistics)

    def _split_outputs(self, outputs: list[np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(prefix, labels, class probabilities) of the test split ("") and the validation split
        ("val_"), where the dataset has one, from the units' outputs in unit order."""
        dataset = self.federation.dataset
        test_units = self._chunks(dataset.test)
        splits = [("", dataset.test.labels, np.concatenate(outputs[:test_units]))]
        if dataset.val is not None:
            splits.append(("val_", dataset.val.labels, np.concatenate(outputs[test_units:])))
        return splits

    def global_metrics(self, outputs: list[np.ndarray]) -> dict[str, float]:
        metrics = dict.fromkeys(self.global_metric_names, float("nan"))
        for prefix, labels, probabilities in self._split_outputs(outputs):
            metrics.update({prefix + name: value for name, value in classification_metrics(labels, probabilities).items()})
        return metrics

    def global_tables(self, outputs: list[np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        """confusion: the global model's confusion matrix on each split, one row per (split,
        true class, predicted class) with its count, zero counts included (K x K rows a split)."""
        num_classes = self.federation.dataset.num_classes
        rows = []
        for prefix, labels, probabilities in self._split_outputs(outputs):
            matrix = confusion_matrix(labels, probabilities.argmax(axis=1), num_classes)
            split = prefix.removesuffix("_") or "test"
            rows += [
                {"split": split, "true": truth, "pred": predicted, "count": int(matrix[truth, predicted])}
                for truth in range(num_classes) for predicted in range(num_classes)
            ]
        return {"confusion": rows}


@contextmanager
def dropped_units(model: nn.Module, subnetwork: Any) -> Iterator[None]:
    """Within: forward hooks zero the dropped units' outputs (channel dim 1), so the model
    computes the sub-network (fedsim.privacy.federated_dropout); no sub-network: nothing changes."""
    modules = dict(model.named_modules())
    hooks = []
    for name, mask in (subnetwork.activation_masks() if subnetwork is not None else {}).items():
        weights = torch.from_numpy(mask).to(next(model.parameters()).device)

        def zero_dropped(module: nn.Module, inputs: Any, output: torch.Tensor, weights: torch.Tensor = weights) -> torch.Tensor:
            return output * weights.view(1, -1, *([1] * (output.dim() - 2)))

        hooks.append(modules[name].register_forward_hook(zero_dropped))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def training_phases(trained: dict[str, torch.Tensor], plan: LocalPlan) -> list[tuple[int, list[torch.Tensor]]]:
    """(epochs, parameters the optimiser steps) in order: every parameter for `plan.epochs`, or
    FedRep's rule (Collins et al. 2021) with `plan.head_keys`: the head alone for
    `plan.head_epochs` (the body frozen), then the body alone for `plan.epochs`."""
    if not plan.head_keys:
        return [(plan.epochs, list(trained.values()))]
    head = [p for name, p in trained.items() if name in plan.head_keys]
    body = [p for name, p in trained.items() if name not in plan.head_keys]
    return [(plan.head_epochs, head), (plan.epochs, body)]


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
