"""Each baseline pinned to its paper's formula on tiny models where the answer is hand-computable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.config import load_config
from fedsim.engine.rounds import local_epochs
from fedsim.engine.worker import WorkerCore
from fedsim.params import is_trained
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import Aggregate, Cohort, Instruction, LocalPlan, LocalResult
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.fedadam import FedAdam, FedAdamConfig
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedbn import FedBN
from fedsim.strategies.fednova import FedNova, effective_steps
from fedsim.strategies.fedprox import FedProx
from fedsim.strategies.fedyogi import FedYogiConfig
from fedsim.strategies.scaffold import Scaffold
from fedsim.tasks.classification import proximal_term
from fedsim.tasks.factory import build_task
from in_process import SEED, one_round
from toy_task import ToyTask, full_cohort


def toy_locals(task: ToyTask, hospitals, epochs, start):
    return [task.local_update(h, start, seed_for(SEED, Stream.LOCAL_TRAINING, 1, h), e) for h, e in zip(hospitals, epochs)]


# ----- FedProx ---------------------------------------------------------------------------------
def test_fedprox_gradient_includes_mu_times_distance_to_global() -> None:
    torch.manual_seed(0)
    w = {"a": torch.randn(3, 4, requires_grad=True), "b": torch.randn(4, requires_grad=True)}
    anchor = {name: torch.randn_like(p) for name, p in w.items()}
    proximal_term(w, anchor, mu=0.3).backward()
    for name, p in w.items():
        torch.testing.assert_close(p.grad, 0.3 * (p.detach() - anchor[name]))


@pytest.fixture(scope="module")
def image_task():
    config = load_config(
        None,
        ["data.source={kind: synthetic, classes: 2, train_samples: 240, test_samples: 40}", "data.hospitals=3",
         "data.partition={scheme: iid}", "train.batch_size=16"],
    )
    return build_task(config)


def test_fedprox_with_mu_zero_is_fedavg_exactly(image_task) -> None:
    cohort = full_cohort_of(image_task)
    fedavg, *_ = one_round(image_task, FedAvg(), cohort)
    fedprox, reports, _, _ = one_round(image_task, FedProx(0.0), cohort)
    assert all(np.array_equal(fedavg[k], fedprox[k]) for k in fedavg)
    assert [r.metrics["mu"] for r in reports] == [0.0] * 3


def test_fedprox_large_mu_keeps_local_models_near_the_global(image_task) -> None:
    cohort = full_cohort_of(image_task)
    start = image_task.initial_params(0)

    def drift(mu: float) -> float:
        strategy = FedProx(mu)
        instruction = strategy.configure(1, cohort)[0]
        result = image_task.train(0, start, instruction.plan, None, SEED)
        return sum(float(np.sum((result.params[k] - start[k]) ** 2)) for k in start if is_trained(k, start[k]))

    assert drift(10.0) < 0.5 * drift(0.0)


def full_cohort_of(task, epochs=None):
    ids = np.arange(task.num_hospitals)
    return Cohort(ids, task.hospital_sizes(), np.array(epochs or [1] * len(ids)))


# ----- FedNova ---------------------------------------------------------------------------------
def test_fednova_matches_normalised_update_for_different_tau() -> None:
    task = ToyTask(num_hospitals=4)
    epochs = [1, 2, 5, 3]
    cohort = full_cohort(task, epochs=epochs)
    broadcast, reports, _, metrics = one_round(task, FedNova(momentum=0.0), cohort, workers=2)
    start = np.zeros(5, dtype=np.float32)
    local = toy_locals(task, range(4), epochs, start)
    p = task.hospital_sizes() / task.hospital_sizes().sum()
    d = [(start - w) / tau for w, tau in zip(local, epochs)]  # a_k = tau_k without momentum
    tau_eff = float(np.sum(p * np.array(epochs)))
    expected = start - tau_eff * sum(pk * dk for pk, dk in zip(p, d))
    np.testing.assert_allclose(broadcast["w"], expected, atol=1e-6)
    assert metrics["tau_eff"] == pytest.approx(tau_eff)
    assert [r.metrics["fednova_a"] for r in sorted(reports, key=lambda r: r.hospital)] == epochs
    fedavg, *_ = one_round(task, FedAvg(), cohort)
    assert not np.allclose(fedavg["w"], expected, atol=1e-3)  # unequal tau: FedNova differs from FedAvg


def test_fednova_with_equal_tau_is_fedavg() -> None:
    task = ToyTask(num_hospitals=5)
    cohort = full_cohort(task, epochs=[3] * 5)
    fednova, *_ = one_round(task, FedNova(momentum=0.5), cohort)
    fedavg, *_ = one_round(task, FedAvg(), cohort)
    np.testing.assert_allclose(fednova["w"], fedavg["w"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_fednova_effective_steps_equal_sgd_momentum_displacement(momentum: float) -> None:
    """Under a constant gradient g, tau steps of SGD with momentum move w by lr * a * g."""
    tau, lr = 7, 0.1
    w = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=lr, momentum=momentum)
    for _ in range(tau):
        optimizer.zero_grad()
        (2.0 * w).sum().backward()  # gradient 2 everywhere
        optimizer.step()
    assert -float(w.detach()) == pytest.approx(lr * 2.0 * effective_steps(tau, momentum))


# ----- FedBN -----------------------------------------------------------------------------------
def test_fedbn_never_sends_bn_and_keeps_each_hospitals_bn(image_task) -> None:
    keys = image_task.normalization_keys()
    assert keys and all("features.1." in k or "features.5." in k for k in keys)
    strategy = FedBN(keys)
    cohort = full_cohort_of(image_task)
    initial = image_task.initial_params(0)
    first, reports, states, _ = one_round(image_task, strategy, cohort)
    contribution = strategy.contribution(LocalResult(initial, 1, 1, {}), Instruction(0, 1.0, LocalPlan(1)), initial)
    assert not keys & set(contribution)
    assert reports[0].upload_bytes == sum(4 * v.size for k, v in initial.items() if k not in keys and v.dtype.kind == "f")
    assert all(np.array_equal(first[k], initial[k]) for k in keys)  # the server never saw BN
    own_bn = states[0].strategy
    assert set(own_bn) == keys and not all(np.array_equal(own_bn[k], initial[k]) for k in keys)
    start = strategy.model_params(first, own_bn)  # round 2 starts from the hospital's own BN
    assert all(np.array_equal(start[k], own_bn[k]) for k in keys)
    assert all(np.array_equal(start[k], first[k]) for k in first if k not in keys)
    # a second round carries each hospital's BN forward from its own first round
    _, _, second_states, _ = one_round(image_task, strategy, cohort, broadcast=first, states=states)
    worker = WorkerCore(image_task, strategy, Pipeline([]), use_gpu=False, threads=1)
    own, _ = worker.evaluate(first, [0], [], states[0])
    shared, _ = worker.evaluate(first, [0], [], None)
    assert own != shared  # evaluation of a hospital uses its own BN
    assert not all(np.array_equal(second_states[0].strategy[k], own_bn[k]) for k in keys)


# ----- SCAFFOLD --------------------------------------------------------------------------------
def test_scaffold_option_two_control_variates_by_hand() -> None:
    lr, server_lr, n_total = 0.1, 1.0, 10
    strategy = Scaffold(local_lr=lr, server_lr=server_lr, num_hospitals=n_total)
    x = {"w": np.array([1.0, -1.0], dtype=np.float32), "bn.running_mean": np.array([0.0], dtype=np.float32)}
    broadcast = strategy.initial_broadcast(x)
    broadcast["scaffold.c:w"] = np.array([0.2, 0.4], dtype=np.float32)
    c_i = {"w": np.array([0.1, -0.1], dtype=np.float32)}
    y = np.array([0.5, -0.5], dtype=np.float32)
    steps = 5
    result = LocalResult({"w": y, "bn.running_mean": np.array([3.0], dtype=np.float32)}, 10, steps, {})
    instruction = strategy.configure(1, full_cohort(ToyTask(2), [0, 1]))[0]
    assert instruction.weight == 0.5
    correction = strategy.local_plan(instruction, broadcast, c_i).gradient_correction
    np.testing.assert_allclose(correction["w"], [0.1, 0.5])  # c - c_i
    assert "scaffold.c:w" not in strategy.model_params(broadcast)
    new_c_i, metrics = strategy.local_state(result, instruction, broadcast, c_i)
    expected_c_i = c_i["w"] - broadcast["scaffold.c:w"] + (x["w"] - y) / (steps * lr)
    np.testing.assert_allclose(new_c_i["w"], expected_c_i, rtol=1e-6)
    assert metrics["control_variate_norm"] == pytest.approx(np.linalg.norm(expected_c_i), rel=1e-6)
    # two hospitals with the same update: aggregate by hand
    shares = strategy.contribution(result, instruction, broadcast)
    total = {k: 2 * v for k, v in shares.items()}
    updated, _ = strategy.aggregate(1, broadcast, Aggregate([instruction, instruction], [], total=total))
    np.testing.assert_allclose(updated["w"], x["w"] + server_lr * (y - x["w"]), rtol=1e-6)
    delta_c = (x["w"] - y) / (steps * lr) - broadcast["scaffold.c:w"]
    np.testing.assert_allclose(updated["scaffold.c:w"], broadcast["scaffold.c:w"] + (2 / n_total) * delta_c, rtol=1e-6)
    np.testing.assert_allclose(updated["bn.running_mean"], [3.0])


def test_task_applies_scaffold_gradient_correction(image_task) -> None:
    start = image_task.initial_params(0)
    plain = image_task.train(0, start, LocalPlan(epochs=1), None, SEED)
    zeros = {k: np.zeros_like(v) for k, v in start.items() if k in dict(image_task.new_module().named_parameters())}
    same = image_task.train(0, start, LocalPlan(epochs=1, gradient_correction=zeros), None, SEED)
    assert all(np.array_equal(plain.params[k], same.params[k]) for k in start)
    push = dict(zeros, **{"head.3.bias": np.full_like(zeros["head.3.bias"], 5.0)})
    pushed = image_task.train(0, start, LocalPlan(epochs=1, gradient_correction=push), None, SEED)
    shift = pushed.params["head.3.bias"] - plain.params["head.3.bias"]
    expected = -image_task.train_config.lr * pushed.steps * 5.0
    np.testing.assert_allclose(shift, expected, rtol=0.05)


# ----- FedAdam / FedYogi -----------------------------------------------------------------------
@pytest.mark.parametrize("variant", [FedAdamConfig, FedYogiConfig])
def test_adaptive_server_step_matches_hand_computation(variant) -> None:
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    strategy = variant(server_lr=eta, beta1=b1, beta2=b2, tau=tau).build(None, None)
    w = np.array([1.0, 2.0], dtype=np.float32)
    m, v = np.zeros(2), np.full(2, tau**2)
    for delta in (np.array([0.5, -0.2]), np.array([0.1, 0.3])):
        updated, metrics = strategy.aggregate(1, {"w": w}, Aggregate([], [], total={"w": delta}))
        m = b1 * m + (1 - b1) * delta
        v = b2 * v + (1 - b2) * delta**2 if variant is FedAdamConfig else v - (1 - b2) * delta**2 * np.sign(v - delta**2)
        expected = w + eta * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(updated["w"], expected.astype(np.float32), rtol=1e-6)
        w = updated["w"]
    assert metrics["server_step_norm"] > 0


def test_adaptive_pseudo_gradient_is_weighted_mean_update() -> None:
    task = ToyTask(num_hospitals=3)
    cohort = full_cohort(task)
    strategy = FedAdam(FedAdamConfig(server_lr=1.0, beta1=0.0, beta2=0.0, tau=1e-9))  # beta1 = beta2 = 0: step = sign(delta)
    broadcast, *_ = one_round(task, strategy, cohort)
    start = np.zeros(5, dtype=np.float32)
    p = task.hospital_sizes() / task.hospital_sizes().sum()
    delta = sum(pk * (w - start) for pk, w in zip(p, toy_locals(task, range(3), [1, 1, 1], start)))
    np.testing.assert_allclose(broadcast["w"], np.sign(delta), atol=1e-5)


# ----- local work ------------------------------------------------------------------------------
def test_local_epochs_modes() -> None:
    sizes = np.array([10, 20, 40, 80])
    hospitals = np.arange(4)
    fixed = load_config(None, ["train.epochs=2"]).train
    assert list(local_epochs(fixed, sizes, hospitals, 0, 1)) == [2, 2, 2, 2]
    proportional = load_config(None, ["train.epochs=1", "train.epochs_mode=proportional", "train.max_epochs=8"]).train
    assert list(local_epochs(proportional, sizes, hospitals, 0, 1)) == [1, 2, 4, 8]
    uniform = load_config(None, ["train.epochs=1", "train.epochs_mode=uniform", "train.max_epochs=5"]).train
    draws = np.concatenate([local_epochs(uniform, sizes, hospitals, 0, r) for r in range(50)])
    assert draws.min() == 1 and draws.max() == 5
    assert np.array_equal(local_epochs(uniform, sizes, hospitals, 0, 3), local_epochs(uniform, sizes, hospitals, 0, 3))


# ----- hospitals that took no optimiser step ---------------------------------------------------
class _IdleFirst(ToyTask):
    """Hospital 0 takes no optimiser step (as a DQN before learning starts): its model is unchanged."""

    def train(self, hospital, params, plan, state, seed):
        result = super().train(hospital, params, plan, state, seed)
        if hospital == 0:
            result.params, result.steps = dict(params), 0
        return result


def test_fednova_leaves_a_hospital_without_steps_out_of_its_normalisation() -> None:
    task = _IdleFirst(num_hospitals=4)
    broadcast, reports, _, metrics = one_round(task, FedNova(momentum=0.5), full_cohort(task))
    assert reports[0].steps == 0 and reports[0].metrics["fednova_a"] == 0.0
    start = np.zeros(5, dtype=np.float32)
    p = task.hospital_sizes() / task.hospital_sizes().sum()
    a = effective_steps(1, 0.5)
    local = toy_locals(task, range(4), [1] * 4, start)
    d = [np.zeros(5)] + [(start - w) / a for w in local[1:]]
    tau_eff = float(np.sum(p[1:] * a))
    assert metrics["tau_eff"] == pytest.approx(tau_eff)
    np.testing.assert_allclose(broadcast["w"], start - tau_eff * sum(pk * dk for pk, dk in zip(p, d)), atol=1e-6)


def test_scaffold_keeps_the_control_variate_of_a_hospital_without_steps() -> None:
    task = _IdleFirst(num_hospitals=4)
    strategy = Scaffold(local_lr=0.1, server_lr=1.0, num_hospitals=4)
    broadcast, _, states, _ = one_round(task, strategy, full_cohort(task))
    assert all(np.all(np.isfinite(array)) for array in broadcast.values())
    assert all(np.all(v == 0) for v in states[0].strategy.values())  # c_i unchanged (zero at first)
    others, *_ = one_round(task, Scaffold(local_lr=0.1, server_lr=1.0, num_hospitals=4), full_cohort(task, [1, 2, 3]))
    np.testing.assert_allclose(broadcast["w"], others["w"] * 3 / 4, atol=1e-6)  # its y_i - x is 0 in the 1/|S| mean


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_scaffold_control_variate_recovers_the_gradient_under_momentum(momentum) -> None:
    lr, steps, gradient = 0.01, 37, np.array([2.0, -0.5])
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=lr, momentum=momentum)
    for _ in range(steps):  # a linear loss: the same gradient every step
        optimizer.zero_grad()
        (w * torch.from_numpy(gradient)).sum().backward()
        optimizer.step()
    strategy = Scaffold(local_lr=lr, server_lr=1.0, num_hospitals=1, momentum=momentum)
    broadcast = strategy.initial_broadcast({"w": np.zeros(2)})
    result = LocalResult({"w": w.detach().numpy()}, 10, steps, {})
    new_c_i, _ = strategy.local_state(result, Instruction(0, 1.0, LocalPlan(1)), broadcast, None)
    np.testing.assert_allclose(new_c_i["w"], gradient, rtol=1e-9)  # c_i+ is the gradient, not a_K/K times it
    plain_estimate = -w.detach().numpy() / (steps * lr)
    assert plain_estimate[0] / gradient[0] == pytest.approx(effective_steps(steps, momentum) / steps)  # 7.6 at 0.9


def test_scaffold_takes_train_momentum_from_the_config() -> None:
    config = load_config(None, ["strategy=scaffold", "train.momentum=0.9", "data.hospitals=3",
                                "data.source={kind: synthetic, classes: 2, train_samples: 60, test_samples: 10}"])
    assert config.strategy.build(config, build_task(config)).momentum == 0.9


def test_fedbn_scores_a_never_trained_hospital_by_batch_statistics_like_the_global_test(image_task) -> None:
    strategy = FedBN(image_task.normalization_keys())
    sampled = np.array([0, 1])
    cohort = Cohort(sampled, image_task.hospital_sizes()[sampled], np.ones(2, dtype=np.int64))
    first, _, states, _ = one_round(image_task, strategy, cohort)
    worker = WorkerCore(image_task, strategy, Pipeline([]), use_gpu=False, threads=1)
    (never_trained,), _ = worker.evaluate(first, [2], [], None)
    by_batch = image_task.evaluate_hospital(2, strategy.model_params(first), None, batch_statistics=True)
    by_stored = image_task.evaluate_hospital(2, strategy.model_params(first), None)
    assert never_trained == by_batch and by_batch["loss"] != by_stored["loss"]
    (trained,), _ = worker.evaluate(first, [0], [], states[0])  # a hospital with its own BN uses it
    assert trained == image_task.evaluate_hospital(0, strategy.model_params(first, states[0].strategy), None)
    assert image_task.evaluate_hospital(2, strategy.model_params(first), None) == by_stored  # stored stats untouched
