"""Vectorised cohorts: train several hospitals of one worker at once, as one model vmapped over
their stacked parameters (torch.func: `functional_call` + `vmap` + `grad`).

What one hospital does is exactly the per-hospital loop's (fedsim.tasks.classification): the same
seeded batch order (`shuffled_batches` from the hospital's LOCAL_TRAINING seed), the same
objective (cross-entropy, plus FedProx's (mu/2)||w - w_start||^2, plus FedMRL's
lambda (L_h - L_global)^2, plus SCAFFOLD's correction on the gradients) and torch.optim.SGD's
update, written out elementwise on the stacked tensors:

    d = g + weight_decay * w;   b = momentum * b + d (b = d on the first step);   w = w - lr * b

Hospitals of different sizes and epochs take different numbers of steps with different last
batches, so each step trains the hospitals that have a batch at that step, grouped by batch size
(one vmapped call per size; usually one): nothing is padded, so BatchNorm's batch statistics and
running statistics (buffers, stacked and updated functionally) are those of the hospital's own
batch. The locally trained models are scored on their own test splits in one vmapped pass in
eval mode (padded: eval mode treats every sample on its own).

Agreement with the loop is to float32 rounding, not bitwise (a vmapped convolution sums in another
order than the loop's channels-last one): tests/test_vectorized.py states the tolerances (one
local training: rtol 1e-3, atol 1e-4; 3 rounds: atol 5e-3). On CPU this path is slower than the
loop (issue 16 measured vmap about 3x slower for the small CNN); it is for GPUs, where one call
over many hospitals replaces many small kernels (experiments/bench/gpu.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from fedsim.config import TrainConfig
from fedsim.params import Params
from fedsim.protocol import LocalPlan

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class HospitalData:
    """One hospital of a vectorised group: its start, plan, seed and its own data on the device."""

    params: Params
    plan: LocalPlan
    seed: int
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class GroupResult:
    """A hospital's trained state_dict (numpy), its training loss sum over samples, samples seen,
    samples its batches classified right as trained, steps taken, and its own test split's class
    probabilities."""

    params: Params
    loss_sum: float
    seen: int
    correct: int
    steps: int
    test_probabilities: np.ndarray


@dataclass(frozen=True)
class _Group:
    """The hospitals that take a step of one batch size: positions in the group (None: all of
    them, in order) and each one's sample indices into the group's concatenated images."""

    positions: torch.Tensor | None
    samples: torch.Tensor  # (hospitals, batch size)


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of mini-batches: a seeded permutation cut into batch_size pieces."""
    order = torch.randperm(count, generator=generator)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


class VectorizedSGD:
    """Local SGD for a group of hospitals sharing one model architecture (`module`)."""

    def __init__(self, module: nn.Module, train: TrainConfig, eval_batch_size: int, device: torch.device) -> None:
        self.template = copy.deepcopy(module).to("meta")  # shapes and forward only: tensors come in by functional_call
        self.train_config = train
        self.eval_batch_size = eval_batch_size
        self.device = device
        self.state_names = list(module.state_dict())
        self.param_names = [name for name, _ in module.named_parameters()]
        self.buffer_names = [name for name in self.state_names if name not in set(self.param_names)]

    # ----- the per-hospital objective, vmapped ---------------------------------------------
    def _step_gradients(self, proximal: bool, fairness: bool) -> Callable[..., Any]:
        """vmap(grad(objective)) over hospitals: (params, buffers, images, labels, anchor, mu,
        lambda, global loss) -> (gradients, (batch loss, updated buffers, correct predictions))."""
        template = self.template

        def objective(params: Tensors, buffers: Tensors, images: torch.Tensor, labels: torch.Tensor,
                      anchor: Tensors, mu: torch.Tensor, strength: torch.Tensor, global_loss: torch.Tensor) -> Any:
            buffers = {name: tensor.clone() for name, tensor in buffers.items()}  # BN updates its copies in place
            logits = functional_call(template, (params, buffers), (images,))
            loss = F.cross_entropy(logits, labels)
            total = loss
            if proximal:
                total = total + 0.5 * mu * sum(torch.sum((params[name] - anchor[name]) ** 2) for name in anchor)
            if fairness:
                total = total + strength * (loss - global_loss) ** 2
            return total, (loss, buffers, (logits.argmax(dim=1) == labels).sum())

        return vmap(grad(objective, has_aux=True))

    # ----- training ------------------------------------------------------------------------
    def train(self, hospitals: Sequence[HospitalData]) -> list[GroupResult]:
        config, device = self.train_config, self.device
        count = len(hospitals)
        params = self._stack([h.params for h in hospitals], self.param_names)
        buffers = self._stack([h.params for h in hospitals], self.buffer_names)
        mu = torch.tensor([h.plan.mu for h in hospitals], dtype=torch.float32, device=device)
        strength, global_loss = self._fairness(hospitals)
        proximal, fairness = bool((mu > 0).any()), bool((strength > 0).any())
        anchor = {name: tensor.clone() for name, tensor in params.items()} if proximal else {}
        correction = self._corrections(hospitals)
        velocity: Tensors = {name: torch.zeros_like(tensor) for name, tensor in params.items()} if config.momentum > 0 else {}
        images = torch.cat([h.train[0] for h in hospitals])
        labels = torch.cat([h.train[1] for h in hospitals])
        schedule, steps, seen = self._schedule(hospitals)
        gradients_of = self._step_gradients(proximal, fairness)
        loss_sum = torch.zeros(count, dtype=torch.float64, device=device)
        correct = torch.zeros(count, dtype=torch.int64, device=device)
        for groups in schedule:
            for group in groups:
                pick = (lambda tensors: tensors) if group.positions is None else (
                    lambda tensors: {name: tensor[group.positions] for name, tensor in tensors.items()})
                at = slice(None) if group.positions is None else group.positions
                part = pick(params)
                gradients, (loss, new_buffers, right) = gradients_of(
                    part, pick(buffers), images[group.samples], labels[group.samples], pick(anchor),
                    mu[at], strength[at], global_loss[at],
                )
                updated, new_velocity = self._sgd(part, gradients, pick(correction), pick(velocity))
                self._put(params, updated, group.positions)
                self._put(buffers, new_buffers, group.positions)
                self._put(velocity, new_velocity, group.positions)
                loss_sum.index_add_(0, self._positions(group, count), loss.detach().double() * group.samples.shape[1])
                correct.index_add_(0, self._positions(group, count), right.detach())
        probabilities = self._test_probabilities(params, buffers, hospitals)
        return self._results(params, buffers, loss_sum, correct, steps, seen, probabilities)

    def _stack(self, starts: Sequence[Params], names: Sequence[str]) -> Tensors:
        return {name: torch.from_numpy(np.stack([np.asarray(start[name]) for start in starts])).to(self.device) for name in names}

    def _fairness(self, hospitals: Sequence[HospitalData]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per hospital lambda and L_global; lambda 0 (and L_global 0, not NaN) where the term is off,
        as in the loop, which applies it only where the broadcast global loss is finite."""
        on = [np.isfinite(h.plan.global_loss) and h.plan.fairness_lambda > 0 for h in hospitals]
        strength = [h.plan.fairness_lambda if use else 0.0 for h, use in zip(hospitals, on)]
        global_loss = [h.plan.global_loss if use else 0.0 for h, use in zip(hospitals, on)]
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float32, device=self.device)  # noqa: E731
        return as_tensor(strength), as_tensor(global_loss)

    def _corrections(self, hospitals: Sequence[HospitalData]) -> Tensors:
        """SCAFFOLD's per-hospital gradient corrections, stacked (zeros for hospitals without)."""
        if not any(h.plan.gradient_correction for h in hospitals):
            return {}
        shapes = {name: np.asarray(hospitals[0].params[name]).shape for name in self.param_names}
        return {
            name: torch.from_numpy(np.stack([
                np.asarray(h.plan.gradient_correction[name], dtype=np.float32) if h.plan.gradient_correction
                else np.zeros(shapes[name], dtype=np.float32) for h in hospitals
            ])).to(self.device)
            for name in self.param_names
        }

    def _schedule(self, hospitals: Sequence[HospitalData]) -> tuple[list[list[_Group]], list[int], list[int]]:
        """Each step's groups (hospitals with a batch at that step, by batch size), and each
        hospital's steps and samples seen: the batches each hospital's own loop would draw."""
        batch_size = self.train_config.batch_size
        offsets = np.cumsum([0] + [len(h.train[1]) for h in hospitals])
        batches: list[list[torch.Tensor]] = []
        for position, hospital in enumerate(hospitals):
            generator = torch.Generator().manual_seed(hospital.seed)
            size = len(hospital.train[1])
            own = [batch + int(offsets[position]) for _ in range(hospital.plan.epochs) for batch in shuffled_batches(size, batch_size, generator)]
            batches.append(own)
        steps = [len(own) for own in batches]
        seen = [sum(len(batch) for batch in own) for own in batches]
        schedule: list[list[_Group]] = []
        for step in range(max(steps, default=0)):
            by_size: dict[int, list[int]] = {}
            for position, own in enumerate(batches):
                if step < len(own):
                    by_size.setdefault(len(own[step]), []).append(position)
            groups = []
            for positions in by_size.values():
                samples = torch.stack([batches[position][step] for position in positions]).to(self.device)
                everyone = len(positions) == len(hospitals)
                groups.append(_Group(None if everyone else torch.tensor(positions, device=self.device), samples))
            schedule.append(groups)
        return schedule, steps, seen

    def _sgd(self, params: Tensors, gradients: Tensors, correction: Tensors, velocity: Tensors) -> tuple[Tensors, Tensors]:
        """torch.optim.SGD's step (no dampening, no Nesterov), on every hospital of the group at once."""
        config = self.train_config
        updated, new_velocity = {}, {}
        for name, weight in params.items():
            direction = gradients[name] + correction[name] if correction else gradients[name]
            if config.weight_decay:
                direction = direction.add(weight, alpha=config.weight_decay)
            if velocity:
                direction = new_velocity[name] = velocity[name] * config.momentum + direction
            updated[name] = weight.add(direction, alpha=-config.lr)
        return updated, new_velocity

    @staticmethod
    def _put(stacked: Tensors, values: Tensors, positions: torch.Tensor | None) -> None:
        for name, value in values.items():
            if positions is None:
                stacked[name] = value
            else:
                stacked[name].index_copy_(0, positions, value)

    def _positions(self, group: _Group, count: int) -> torch.Tensor:
        return torch.arange(count, device=self.device) if group.positions is None else group.positions

    # ----- scoring and results -------------------------------------------------------------
    @torch.no_grad()
    def _test_probabilities(self, params: Tensors, buffers: Tensors, hospitals: Sequence[HospitalData]) -> list[np.ndarray]:
        """Each trained model's class probabilities on its own test split, in eval mode (every
        sample on its own, so zero padding to the largest split changes nobody's outputs)."""
        sizes = [len(h.test[1]) for h in hospitals]
        longest = max(sizes, default=0)
        if longest == 0:
            return [np.zeros((0, 0), dtype=np.float32) for _ in hospitals]
        padded = torch.stack([F.pad(h.test[0], (0, 0, 0, 0, 0, 0, 0, longest - len(h.test[1]))) for h in hospitals])
        self.template.eval()
        forward = vmap(lambda p, b, x: F.softmax(functional_call(self.template, (p, b), (x,)), dim=1))
        try:
            chunks = [forward(params, buffers, padded[:, start : start + self.eval_batch_size])
                      for start in range(0, longest, self.eval_batch_size)]
        finally:
            self.template.train()
        probabilities = torch.cat(chunks, dim=1).float().cpu().numpy()
        return [probabilities[position, :size] for position, size in enumerate(sizes)]

    def _results(self, params: Tensors, buffers: Tensors, loss_sum: torch.Tensor, correct: torch.Tensor, steps: list[int], seen: list[int],
                 probabilities: list[np.ndarray]) -> list[GroupResult]:
        trained = {**params, **buffers}
        arrays = {name: trained[name].detach().cpu().numpy() for name in self.state_names}
        losses, rights = loss_sum.cpu().tolist(), correct.cpu().tolist()
        return [
            GroupResult({name: arrays[name][position].copy() for name in self.state_names}, losses[position],
                        seen[position], rights[position], steps[position], probabilities[position])
            for position in range(len(steps))
        ]


def vectorization_problem(module: nn.Module, channels: int, image_size: int) -> str | None:
    """Why `module` cannot be trained under vmap (its error's first line), or None: one step of
    two stacked copies on two blank images, so a model that cannot is refused before any round
    (data-dependent control flow, dropout's randomness, in-place ops on inputs...)."""
    train = TrainConfig(epochs=1, batch_size=2, lr=0.1)
    trainer = VectorizedSGD(module, train, eval_batch_size=2, device=torch.device("cpu"))
    params = {name: tensor.detach().numpy().copy() for name, tensor in _cpu_state(module).items()}
    images = torch.zeros(2, channels, image_size, image_size)
    blank = (images, torch.zeros(2, dtype=torch.int64))
    try:
        trainer.train([HospitalData(params, LocalPlan(epochs=1), seed, blank, blank) for seed in (0, 1)])
    except Exception as error:  # any failure under vmap means the model cannot take this path
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return None


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.cpu() for name, tensor in module.state_dict().items()}
