"""Federated dropout (Caldas et al. 2018): each hospital's sub-network is a pure function of (seed,
hospital, round), it trains only that sub-network and sends only its entries, the server averages
every entry over exactly the hospitals holding it, bytes count the sub-network both ways, and the
combinations that are not sound are refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.config import load_config
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import run_round
from fedsim.errors import ConfigError
from fedsim.params import params_nbytes
from fedsim.pipeline.base import Pipeline, ServerContext
from fedsim.privacy.federated_dropout import FederatedDropout, UnitLayer, draw_subnetwork, entry_products
from fedsim.privacy.stages import section_stages
from fedsim.protocol import Instruction, LocalPlan
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedavgm import FedAvgM
from fedsim.tasks.factory import build_task
from in_process import SEED, one_round
from toy_task import ToyTask, full_cohort

TINY = ["data.hospitals=3", "data.source.train_samples=60", "data.source.test_samples=12", "data.source.image_size=8"]


def _config(*extra: str, fraction: float = 0.5):
    return load_config(None, [*TINY, f"compression={{scheme: federated_dropout, fraction: {fraction}}}", *extra])


def _stage(config, task) -> FederatedDropout:
    (stage,) = section_stages(config, task)
    return stage


@pytest.mark.parametrize("model", ["small_cnn", "small_cnn_gn"])
def test_the_sub_network_is_a_pure_function_of_seed_hospital_and_round(model: str) -> None:
    config = _config(f"model.name={model}")
    stage = _stage(config, build_task(config))
    first = stage.subnetwork(3, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first.kept, stage.subnetwork(3, 1).kept))
    others = [stage.subnetwork(3, 2), stage.subnetwork(4, 1)]
    assert all(any(not np.array_equal(a, b) for a, b in zip(first.kept, other.kept)) for other in others)
    # half of every layer's units kept: conv channels (GroupNorm: whole groups of channels), head neurons
    assert [int(k.sum()) for k in first.kept] == [layer.units // 2 for layer in stage.layers]
    if model == "small_cnn_gn":
        assert [(layer.units, layer.width) for layer in stage.layers] == [(8, 4), (8, 8), (32, 1)]


def test_only_the_sub_network_trains_and_every_other_entry_comes_back_exactly() -> None:
    config = _config("model.name=small_cnn", "train.weight_decay=0.01")  # decay would move dropped entries
    task = build_task(config)
    stage = _stage(config, task)
    start = task.initial_params(0)
    subnetwork = stage.subnetwork(1, 0)
    result = task.train(0, start, LocalPlan(epochs=1, subnetwork=subnetwork), None, seed=5)
    held = subnetwork.held({n: a.shape for n, a in start.items()})
    for name, mask in held.items():
        np.testing.assert_array_equal(result.params[name][~mask], start[name][~mask], err_msg=name)
        assert np.mean(result.params[name][mask] != start[name][mask]) > 0.5, name
    conv2 = held["features.4.weight"]  # a conv filter is held iff its output and input channels are kept
    np.testing.assert_array_equal(conv2[:, :, 0, 0], np.outer(subnetwork.kept[1], subnetwork.kept[0]))
    np.testing.assert_array_equal(held["head.1.weight"], np.outer(subnetwork.kept[2], np.repeat(subnetwork.kept[1], 49)))
    # the full model trains differently: the dropped units really are out of the computation
    assert task.train(0, start, LocalPlan(epochs=1), None, seed=5).metrics["train_loss"] != result.metrics["train_loss"]


def test_the_sub_network_ignores_the_values_of_dropped_entries() -> None:
    config = _config("model.name=small_cnn_gn")
    task = build_task(config)
    subnetwork = _stage(config, task).subnetwork(2, 1)
    start = task.initial_params(0)
    held = subnetwork.held({n: a.shape for n, a in start.items()})
    scrambled = {n: np.where(held[n], a, np.float32(3.0)) if n in held else a for n, a in start.items()}
    one = task.train(1, start, LocalPlan(epochs=1, subnetwork=subnetwork), None, seed=9)
    two = task.train(1, scrambled, LocalPlan(epochs=1, subnetwork=subnetwork), None, seed=9)
    assert one.metrics["train_loss"] == two.metrics["train_loss"]
    for name, mask in held.items():
        np.testing.assert_array_equal(one.params[name][mask], two.params[name][mask], err_msg=name)


def test_a_round_is_bitwise_the_same_on_one_and_two_workers_and_counts_sub_network_bytes() -> None:
    config = _config("model.name=small_cnn_gn")
    task = build_task(config)
    stage = _stage(config, task)
    initial = task.initial_params(0)
    cohort = full_cohort(task)
    outcomes = []
    for workers in (1, 2):
        backend = InProcessBackend(task, FedAvg(), Pipeline([stage]), initial, SEED, workers)
        outcomes.append((run_round(backend, task, 1, cohort, scored=None), backend.server.broadcast))
    (one, model_one), (two, model_two) = outcomes
    for name in model_one:
        np.testing.assert_array_equal(model_one[name], model_two[name], err_msg=name)
    shapes = {n: a.shape for n, a in initial.items()}
    full = params_nbytes(initial)
    expected_down, expected_up = 0, []
    for hospital in cohort.hospitals:
        held = stage.subnetwork(1, int(hospital)).held(shapes)
        dropped = sum(int((~mask).sum()) for mask in held.values())
        expected_down += full - 4 * dropped
        expected_up.append(sum(4 * int(held[n].sum()) if n in held else initial[n].nbytes for n in initial
                               if np.issubdtype(initial[n].dtype, np.floating)))
    assert one.bytes_sent == two.bytes_sent == expected_down < full * len(cohort.hospitals)
    assert [r.upload_bytes for r in one.reports] == [r.upload_bytes for r in two.reports] == expected_up


def _toy_stage(fraction: float = 0.4) -> FederatedDropout:
    """The toy task's 5-vector as one layer of 5 units (2 dropped per hospital and round)."""
    layer = UnitLayer("w", units=5, width=1, members=(("w", 0, 1),))
    return FederatedDropout((layer,), {"w": (5,), "count": ()}, fraction, SEED, expected_denominator=False)


@pytest.mark.parametrize("strategy", [FedAvg(), FedAvgM(server_lr=1.0, momentum=0.0)], ids=["sums-models", "sums-updates"])
def test_each_entry_is_the_weighted_mean_over_exactly_its_holders(strategy) -> None:
    task = ToyTask(num_hospitals=4)
    stage = _toy_stage()
    start = np.full(5, 0.25, dtype=np.float32)
    broadcast = {"w": start, "count": np.zeros((), dtype=np.int64)}
    new, reports, _, metrics = one_round(task, strategy, full_cohort(task), broadcast=broadcast, pipeline=Pipeline([stage]))
    sizes = task.hospital_sizes().astype(np.float64)
    expected = start.astype(np.float64).copy()
    holders = np.array([stage.subnetwork(1, h).kept[0] for h in range(4)])
    for entry in range(5):
        who = np.flatnonzero(holders[:, entry])
        if len(who):
            updates = [task.local_update(h, start, seed_for(SEED, Stream.LOCAL_TRAINING, 1, h))[entry] - start[entry] for h in who]
            expected[entry] += np.dot(sizes[who], updates) / sizes[who].sum()
    np.testing.assert_allclose(new["w"], expected, atol=1e-6)
    assert metrics["pipeline_dropout_unheld_fraction"] == np.mean(~holders.any(axis=0))
    assert [r.upload_bytes for r in reports] == [4 * 3] * 4  # 3 of 5 entries each


def test_an_entry_nobody_holds_keeps_the_global_value() -> None:
    task = ToyTask(num_hospitals=1)
    stage = _toy_stage(fraction=0.8)  # one unit of five kept
    start = np.full(5, 0.5, dtype=np.float32)
    new, *_ = one_round(task, FedAvg(), full_cohort(task), broadcast={"w": start, "count": np.zeros((), np.int64)}, pipeline=Pipeline([stage]))
    kept = stage.subnetwork(1, 0).kept[0]
    assert kept.sum() == 1
    np.testing.assert_array_equal(new["w"][~kept], start[~kept])
    assert new["w"][kept][0] != start[kept][0]


def test_with_central_dp_the_denominator_is_the_expected_holder_share() -> None:
    config = _config("model.name=small_cnn_gn", "privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0}")
    task = build_task(config)
    stages = section_stages(config, task)
    dropout = stages[0]
    assert dropout.expected_denominator and type(stages[1]).__name__ == "CentralDP"
    shares = dropout._expected_share()
    np.testing.assert_allclose(shares["head.1.weight"], 0.5 * 0.5)  # kept fraction of head neurons x of conv-2 groups
    np.testing.assert_allclose(shares["features.0.weight"], 0.5)  # the image channel is never dropped
    products = entry_products(dropout.layers, [np.arange(layer.units) + 1.0 for layer in dropout.layers], dropout.shapes)
    np.testing.assert_array_equal(products["head.3.weight"], np.tile(np.arange(32) + 1.0, (dropout.shapes["head.3.weight"][0], 1)))  # by input neuron
    np.testing.assert_array_equal(products["head.1.weight"][4, ::392], 5.0 * (np.arange(8) + 1.0))  # neuron x conv-2 group


def test_the_draw_keeps_at_least_one_unit() -> None:
    layer = UnitLayer("x", units=3, width=1, members=())
    assert draw_subnetwork((layer,), 0.9, 0, 1, 1).kept[0].sum() == 1


@pytest.mark.parametrize(("overrides", "message"), [
    (["secure_aggregation={threshold: 2, neighbours: 2}"], "federated_dropout cannot combine with secure_aggregation"),
    (["model.name=small_cnn_gn", "privacy={mechanism: dp_sgd, clip_norm: 1.0, noise_multiplier: 1.0}"],
     "federated_dropout cannot combine with privacy.mechanism dp_sgd"),
    (["task=scheduling"], "compression.scheme: federated_dropout needs training a given sub-network"),
    (["strategy=krum"], "compression.scheme: strategy krum is not supported"),
], ids=["secagg", "dp_sgd", "scheduling", "krum"])
def test_unsound_combinations_are_refused_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        _config(*overrides)
    assert "\n" not in str(error.value)


def test_a_fraction_of_one_and_unknown_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="compression: fraction: federated_dropout drops this fraction of units, expected below 1"):
        _config(fraction=1)
    config = _config("model.name=resnet18")
    with pytest.raises(ConfigError, match="federated_dropout does not know the layers of model resnet18"):
        section_stages(config, build_task(config))


def test_with_local_dp_the_noise_on_dropped_entries_never_leaves() -> None:
    config = _config("model.name=small_cnn_gn", "privacy={mechanism: local, clip_norm: 1.0, noise_multiplier: 1.0}")
    task = build_task(config)
    stages = section_stages(config, task)
    assert [type(stage).__name__ for stage in stages] == ["LocalDP", "FederatedDropout"]
    start = task.initial_params(0)
    subnetwork = stages[1].subnetwork(1, 0)
    result = task.train(0, start, LocalPlan(epochs=1, subnetwork=subnetwork), None, seed=3)
    sent, *_ = Pipeline(stages).hospital_side(result, start, frozenset(), Instruction(0, 1.0, LocalPlan(1)), 1, SEED, ())
    for name, mask in subnetwork.held({n: a.shape for n, a in start.items()}).items():
        np.testing.assert_array_equal(sent.params[name][~mask], start[name][~mask], err_msg=name)
        assert np.all(sent.params[name][mask] != result.params[name][mask]), name  # noised


def test_with_central_dp_the_noise_goes_on_before_the_expected_denominator() -> None:
    config = _config("model.name=small_cnn_gn", "privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 2.0}")
    task = build_task(config)
    pipeline = Pipeline(section_stages(config, task))
    start = {n: np.zeros(a.shape, np.float32) for n, a in task.initial_params(0).items()}
    context = ServerContext(1, [], 1.0, {}, start, sums_updates=False)
    total, metrics = pipeline.server_side({n: a.astype(np.float64) for n, a in start.items()}, context, [{}, {}])
    # noise std sigma * C / m on the sum, then divided by P = 1/4 for head.1's entries
    assert np.std(total["head.1.weight"]) == pytest.approx(4 * metrics["noise_std"], rel=0.02)
    assert np.std(total["features.0.weight"]) == pytest.approx(2 * metrics["noise_std"], rel=0.2)
