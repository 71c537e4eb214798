"""Personalisation and clustered FL, each pinned to a hand-checkable property: fine-tuning before
evaluation (eval.personalise_steps), FedPer / FedRep's local heads, Ditto's personal models and
IFCA's cluster models."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedsim.config import load_config
from fedsim.engine.worker import WorkerCore
from fedsim.errors import ConfigError
from fedsim.params import is_trained
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import Cohort, HospitalState, LocalPlan
from fedsim.seeding import Stream, seed_for
from fedsim.simulation import Simulation
from fedsim.strategies.fedavg import FedAvg
from fedsim.tasks.factory import build_task
from in_process import SEED, one_round

IMAGES = ["data.source={kind: synthetic, classes: 2, train_samples: 240, test_samples: 40}", "data.hospitals=3",
          "data.partition={scheme: iid}", "train.batch_size=16"]
SCHEDULING = [
    "task=scheduling", "scheduling.hospitals=2", "scheduling.eval_episodes=1", "scheduling.env.episode_hours=4",
    "scheduling.dqn={steps_per_epoch: 40, learning_starts: 20, buffer_size: 100, batch_size: 8, "
    "target_update_steps: 50, exploration_steps: 100}",
]


@pytest.fixture(scope="module")
def image_task():
    return build_task(load_config(None, IMAGES))


def cohort_of(task, hospitals=None, epochs=1) -> Cohort:
    ids = np.array(hospitals if hospitals is not None else range(task.num_hospitals))
    return Cohort(ids, task.hospital_sizes()[ids], np.full(len(ids), epochs))


def same(one: dict, two: dict) -> bool:
    return one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)


# ----- fine-tuning before evaluation -------------------------------------------------------------
def test_fine_tuning_with_zero_steps_is_plain_global_evaluation(image_task) -> None:
    params = image_task.initial_params(0)
    assert same(image_task.fine_tune(0, params, 0, None, SEED), params)
    for hospital in range(3):
        tuned = image_task.fine_tune(hospital, params, 0, None, SEED)
        assert image_task.evaluate_hospital(hospital, tuned, None) == image_task.evaluate_hospital(hospital, params, None)
    scores, _ = WorkerCore(image_task, FedAvg(), Pipeline([]), False, 1, personalise_steps=0).evaluate(params, [0, 1, 2], [], None, None, None)
    assert scores == [image_task.evaluate_hospital(h, params, None) for h in range(3)]  # and no personalised_* columns


def test_fine_tuning_scores_a_seeded_copy_beside_the_untouched_global_model(image_task) -> None:
    broadcast, *_ = one_round(image_task, FedAvg(), cohort_of(image_task))
    before = copy.deepcopy(broadcast)
    units = list(range(image_task.global_eval_units()))
    plain, plain_outputs = WorkerCore(image_task, FedAvg(), Pipeline([]), False, 1).evaluate(broadcast, [0, 1, 2], units, *[None] * 3)
    tuning = WorkerCore(image_task, FedAvg(), Pipeline([]), False, 1, personalise_steps=5)
    scores, outputs = tuning.evaluate(broadcast, [0, 1, 2], units, *[None] * 3, round_index=4, run_seed=SEED)
    assert same(broadcast, before)  # the global model, bit for bit
    assert all(np.array_equal(a, b) for a, b in zip(outputs, plain_outputs))
    for hospital, (mine, global_only) in enumerate(zip(scores, plain)):
        assert {k: mine[k] for k in global_only} == global_only
        tuned = image_task.fine_tune(hospital, broadcast, 5, None, seed_for(SEED, Stream.FINE_TUNE, 4, hospital))
        assert not same(tuned, broadcast)
        expected = image_task.evaluate_hospital(hospital, tuned, None)
        assert mine["personalised_accuracy"] == expected["accuracy"] and mine["personalised_loss"] == expected["loss"]


def test_personalised_metrics_reach_hospital_eval(tmp_path: Path) -> None:
    config = load_config(None, IMAGES + ["rounds=2", "engine.backend=in_process", "eval.personalise_steps=3"])
    Simulation(config, tmp_path / "run", quiet=True).run()
    table = pq.read_table(tmp_path / "run" / "hospital_eval.parquet").to_pydict()
    assert len(table["personalised_accuracy"]) == 6 and len(table["accuracy"]) == 6
    assert table["personalised_loss"] != table["loss"]


def test_scheduling_fine_tuning_trains_a_copy_and_leaves_the_learner_state() -> None:
    task = build_task(load_config(None, SCHEDULING))
    params = task.initial_params(0)
    trained = task.train(0, params, LocalPlan(epochs=1), None, SEED)
    frozen = copy.deepcopy(trained.state)
    tuned = task.fine_tune(0, trained.params, 10, trained.state, SEED)  # past learning_starts: 10 gradient steps
    assert not same(tuned, trained.params)
    assert same(vars(trained.state.buffer), vars(frozen.buffer)) and same(trained.state.target, frozen.target)
    assert trained.state.env_steps == frozen.env_steps
    assert same(task.fine_tune(0, trained.params, 10, trained.state, SEED), tuned)  # seeded


# ----- FedPer / FedRep ---------------------------------------------------------------------------
class Recording:
    """Wraps a strategy's aggregate to keep what the server summed."""

    def __init__(self, strategy) -> None:
        self.totals: list[dict] = []
        original = strategy.aggregate

        def aggregate(round_index, broadcast, aggregate):
            self.totals.append(aggregate.total)
            return original(round_index, broadcast, aggregate)

        strategy.aggregate = aggregate


def test_default_head_is_the_final_linear_layer(image_task) -> None:
    from fedsim.models import model_factory
    from fedsim.strategies.fedper import head_keys

    assert head_keys(image_task.new_module(), None) == {"head.3.weight", "head.3.bias"}
    assert head_keys(model_factory("resnet18")(1, 2), None) == {"fc.weight", "fc.bias"}
    dqn = build_task(load_config(None, SCHEDULING)).new_module()
    last = len(dqn.net) - 1
    assert head_keys(dqn, None) == {f"net.{last}.weight", f"net.{last}.bias"}
    with pytest.raises(ConfigError, match="strategy.head"):
        head_keys(image_task.new_module(), "nothing.")


def test_fedper_head_never_leaves_the_hospital_and_the_body_is_fedavgs(image_task) -> None:
    from fedsim.strategies.fedper import FedPer, head_keys

    head = head_keys(image_task.new_module(), None)
    strategy = FedPer(head)
    recorder = Recording(strategy)
    initial = image_task.initial_params(0)
    cohort = cohort_of(image_task)
    shared, reports, states, _ = one_round(image_task, strategy, cohort)
    fedavg, *_ = one_round(image_task, FedAvg(), cohort)
    assert not head & set(recorder.totals[0])  # the server's aggregate holds no head entry
    assert all(np.array_equal(shared[k], initial[k]) for k in head)
    assert all(np.array_equal(shared[k], fedavg[k]) for k in shared if k not in head)  # FedAvg's mean of bodies
    assert reports[0].upload_bytes == sum(4 * v.size for k, v in initial.items() if k not in head and v.dtype.kind == "f")
    for hospital in range(3):
        own = image_task.train(hospital, initial, LocalPlan(1), None, seed_for(SEED, Stream.LOCAL_TRAINING, 1, hospital))
        assert same(states[hospital].strategy, {k: own.params[k] for k in head})
    worker = WorkerCore(image_task, strategy, Pipeline([]), False, 1)
    with_head, _ = worker.evaluate(shared, [0], [], states[0])
    assert with_head == [image_task.evaluate_hospital(0, {**shared, **states[0].strategy}, None)]  # scored with its own head
    # round 2 starts from the hospital's own head
    _, _, second, _ = one_round(image_task, strategy, cohort, broadcast=shared, states=states)
    start = {**shared, **states[1].strategy}
    own = image_task.train(1, start, LocalPlan(1), None, seed_for(SEED, Stream.LOCAL_TRAINING, 1, 1))
    assert same(second[1].strategy, {k: own.params[k] for k in head})


def test_fedrep_trains_the_head_with_the_body_frozen_then_the_body_with_the_head_frozen(image_task) -> None:
    from fedsim.strategies.fedper import head_keys

    head = head_keys(image_task.new_module(), None)
    start = image_task.initial_params(0)
    trained = [k for k in start if k.endswith(("weight", "bias"))]

    def moved(head_epochs: int, epochs: int) -> set[str]:
        result = image_task.train(0, start, LocalPlan(epochs, head_keys=head, head_epochs=head_epochs), None, SEED)
        return {k for k in trained if not np.array_equal(result.params[k], start[k])}

    assert moved(1, 0) == head
    assert moved(0, 1) == set(trained) - head


@pytest.mark.parametrize(("settings", "field"), [
    (SCHEDULING + ["strategy=fedrep"], "strategy.name: fedrep needs head-then-body"),
    (SCHEDULING + ["strategy=ditto"], "strategy.name: ditto needs a proximal term towards a given model"),
    (SCHEDULING + ["strategy=ifca"], "strategy.name: ifca needs a model.s loss on a hospital.s training data"),
    (IMAGES + ["strategy=fedrep", "privacy={mechanism: dp_sgd, clip_norm: 1.0, noise_multiplier: 1.0}"], "two optimisers"),
])
def test_refused_combinations_say_so_in_one_line(settings, field) -> None:
    with pytest.raises(ConfigError, match=field) as error:
        load_config(None, settings)
    assert "\n" not in str(error.value)


# ----- Ditto ------------------------------------------------------------------------------------
def distance(one: dict, two: dict) -> float:
    """Over trained parameters (BatchNorm's running statistics are not pulled by a loss)."""
    return float(np.sqrt(sum(np.sum((one[k].astype(np.float64) - two[k]) ** 2) for k in one if is_trained(k, one[k]))))


def test_ditto_trains_fedavg_and_keeps_a_personal_model_that_lambda_zero_leaves_local(image_task) -> None:
    from fedsim.strategies.ditto import Ditto

    cohort = cohort_of(image_task)
    initial = image_task.initial_params(0)
    shared, reports, states, _ = one_round(image_task, Ditto(0.0), cohort)
    fedavg, *_ = one_round(image_task, FedAvg(), cohort)
    assert same(shared, fedavg)  # the global model is FedAvg's, bit for bit
    for hospital in range(3):
        local = image_task.train(hospital, initial, LocalPlan(1), None, seed_for(SEED, Stream.PERSONAL_TRAINING, 1, hospital))
        assert same(states[hospital].strategy, local.params)  # lambda = 0: local training from w
        assert reports[hospital].metrics["personal_train_loss"] == local.metrics["train_loss"]
    worker = WorkerCore(image_task, Ditto(0.0), Pipeline([]), False, 1)
    scores, _ = worker.evaluate(shared, [0], [], states[0])
    assert scores == [image_task.evaluate_hospital(0, states[0].strategy, None)]  # scored with v_0


def test_ditto_with_a_large_lambda_keeps_the_personal_model_near_the_global(image_task) -> None:
    from fedsim.strategies.ditto import Ditto

    cohort = cohort_of(image_task, [0], epochs=2)
    # round 2: v_0 starts from its round-1 model, away from the new global model w
    _, _, states, _ = one_round(image_task, Ditto(0.0), cohort)
    w, *_ = one_round(image_task, FedAvg(), cohort_of(image_task))

    def drift(lam: float) -> float:
        _, _, after, _ = one_round(image_task, Ditto(lam), cohort, broadcast=w, states=states)
        return distance(after[0].strategy, w)

    free, pulled = drift(0.0), drift(10.0)  # lr * lam = 0.5: each step halves v - w, besides the loss's pull
    assert pulled < 0.25 * free
    assert pulled < 0.5 * distance(states[0].strategy, w)  # closer to w than where it started


# ----- IFCA -------------------------------------------------------------------------------------
def ifca(task, clusters: int):
    from fedsim.strategies.ifca import IFCAConfig

    config = load_config(None, IMAGES + ["strategy={name: ifca, clusters: %d}" % clusters])
    return IFCAConfig(clusters=clusters).build(config, task)


def test_ifca_with_one_cluster_is_fedavg_bit_for_bit(image_task) -> None:
    strategy = ifca(image_task, 1)
    cohort = cohort_of(image_task)
    broadcast = strategy.initial_broadcast(image_task.initial_params(0))
    averaged = image_task.initial_params(0)
    for _ in range(2):
        broadcast, reports, _, metrics = one_round(image_task, strategy, cohort, broadcast=broadcast)
        averaged, *_ = one_round(image_task, FedAvg(), cohort, broadcast=averaged)
        assert same(strategy.global_params(broadcast), averaged)
        assert [r.metrics["cluster"] for r in reports] == [0.0] * 3 and metrics["cluster0_hospitals"] == 3


def test_ifca_hospitals_choose_by_training_loss_and_each_cluster_averages_its_members(image_task) -> None:
    strategy = ifca(image_task, 3)
    start = strategy.initial_broadcast(image_task.initial_params(0))
    broadcast, reports, _, metrics = one_round(image_task, strategy, cohort_of(image_task))
    models = strategy.models(start)
    sizes = image_task.hospital_sizes()
    chosen = {}
    for hospital in range(3):
        losses = [image_task.train_loss(hospital, model, None) for model in models]
        chosen[hospital] = int(np.argmin(losses))
        assert reports[hospital].metrics["cluster"] == chosen[hospital]
    for cluster, model in enumerate(strategy.models(broadcast)):
        members = [h for h in chosen if chosen[h] == cluster]
        assert metrics[f"cluster{cluster}_hospitals"] == len(members)
        if not members:
            assert same(model, models[cluster])
            continue
        trained = [image_task.train(h, models[cluster], LocalPlan(1), None, seed_for(SEED, Stream.LOCAL_TRAINING, 1, h)).params
                   for h in members]
        share = sizes[members] / sizes[members].sum()
        for name in ("head.3.weight", "features.0.weight"):
            expected = sum(s * p[name].astype(np.float64) for s, p in zip(share, trained))
            np.testing.assert_allclose(model[name], expected, rtol=1e-5, atol=1e-6)


def halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Easy images: class 1 bright in the bottom half, class 0 in the top half."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    images = rng.integers(0, 60, (count, 1, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        image[0, 14:] += 150 if label else 0
        image[0, :14] += 0 if label else 150
    return images, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ifca_separates_two_groups_of_hospitals_with_opposite_labels(seed: int, tmp_path: Path) -> None:
    from fedsim.attacks import attackers
    from fedsim.data.custom import dataset_from_arrays

    dataset = dataset_from_arrays(halves(480, 1), halves(96, 2), classes=2)
    config = load_config(None, [
        "data.source={kind: custom}", "data.hospitals=6", "data.partition={scheme: iid}", "train.batch_size=16",
        "train.epochs=1", "rounds=3", "engine.backend=in_process", "strategy={name: ifca, clusters: 2}",
        "attack={kind: label_flip, fraction: 0.5}", f"seed={seed}",  # half the hospitals: training labels y -> 1 - y
    ])
    Simulation(config, tmp_path / "run", quiet=True, dataset=dataset).run()
    clients = pq.read_table(tmp_path / "run" / "clients.parquet").to_pandas()
    last = clients[clients["round"] == 3].set_index("hospital")["cluster"]
    flipped = sorted(attackers(seed, 6, 0.5))
    assert last[flipped].nunique() == 1 and last.drop(flipped).nunique() == 1
    assert last[flipped].iloc[0] != last.drop(flipped).iloc[0]
    # each hospital is scored with its own cluster's model: the flipped group's model learnt
    # flipped labels, so it fails the (true-labelled) test splits the other group's passes
    scores = pq.read_table(tmp_path / "run" / "hospital_eval.parquet").to_pandas()
    accuracy = scores[scores["round"] == 3].set_index("hospital")["accuracy"]
    assert accuracy[flipped].max() < 0.2 and accuracy.drop(flipped).min() > 0.8


# ----- on Ray -----------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    ["strategy={name: ifca, clusters: 2}", "eval.personalise_steps=2"],
    ["strategy=ditto"],
], ids=["ifca+fine-tuning", "ditto"])
def test_ray_and_in_process_backends_agree_bitwise(settings: list[str], ray_cluster, tmp_path: Path) -> None:
    from test_faults import SMALL, assert_same_run

    overrides = SMALL + ["rounds=2", "sampling.clients_per_round=5", "engine.workers=2", *settings]
    for backend in ("ray", "in_process"):
        Simulation(load_config(None, overrides + [f"engine.backend={backend}"]), tmp_path / backend, quiet=True).run()
    assert_same_run(tmp_path / "ray", tmp_path / "in_process")
