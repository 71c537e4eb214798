"""No test-set information reaches a learning strategy: a validation split exists for every
dataset, `observe` sees validation metrics only, the reports a strategy weighs and aggregates
with carry no local test scores, and perturbing the test data leaves training bitwise unchanged."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from fedsim.config import ConfigError, load_config
from fedsim.data.arrays import ImageDataset, ImageSet
from fedsim.data.federation import Federation, load_dataset
from fedsim.data.splits import with_validation
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import RoundSchedule, run_round
from fedsim.pipeline.base import Pipeline
from fedsim.strategies.fedmrl import FedMRL
from fedsim.tasks.factory import build_task

OVERRIDES = [
    "data.source={kind: synthetic, classes: 3, train_samples: 600, test_samples: 120}",
    "data.hospitals=6", "sampling.clients_per_round=4", "train.epochs=1", "rounds=3",
    "strategy={name: fedmrl, qmix_batch_size: 4}",
]


class _Spy(FedMRL):
    """FedMRL (QMIX on) writing down everything the engine hands its learning hooks."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.observed: list[dict[str, float]] = []
        self.report_metrics: list[set[str]] = []
        self.mus: list[list[float]] = []

    def configure(self, round_index, cohort):
        instructions = super().configure(round_index, cohort)
        self.mus.append([i.plan.mu for i in instructions])
        return instructions

    def observe(self, round_index, validation):
        self.observed.append(dict(validation))
        super().observe(round_index, validation)

    def weigh(self, round_index, instructions, reports, summaries):
        self.report_metrics += [set(r.metrics) for r in reports]
        return super().weigh(round_index, instructions, reports, summaries)

    def aggregate(self, round_index, broadcast, aggregate):
        self.report_metrics += [set(r.metrics) for r in aggregate.reports]
        return super().aggregate(round_index, broadcast, aggregate)


class _ShuffledTest(Federation):
    """The same federation with every hospital's own test labels permuted."""

    def hospital_arrays(self, hospital, split):
        images, labels = super().hospital_arrays(hospital, split)
        return images, (np.roll(labels, 1) + 1) % self.dataset.num_classes if split == "test" else labels


def _train(perturb_test: bool):
    config = load_config(None, OVERRIDES)
    task = build_task(config)
    if perturb_test:
        federation = task.federation
        dataset = federation.dataset
        flipped = ImageSet(dataset.test.images[::-1].copy(), (dataset.test.labels + 1) % dataset.num_classes)
        task.federation = _ShuffledTest(**{f.name: getattr(federation, f.name) for f in fields(Federation)})
        task.federation = replace(task.federation, dataset=replace(dataset, test=flipped))
    strategy = _Spy(config.strategy, config.rounds, config.clients_per_round(), config.seed)
    backend = InProcessBackend(task, strategy, Pipeline([]), task.initial_params(0), config.seed, workers=2)
    schedule = RoundSchedule(config, task)
    outcomes = []
    for round_index in range(1, config.rounds + 1):
        cohort = schedule.cohort(round_index)
        outcomes.append(run_round(backend, task, round_index, cohort, schedule.scored(round_index, cohort)))
    return backend.server.broadcast, strategy, outcomes


def test_strategy_sees_validation_metrics_only_and_no_local_test_scores() -> None:
    _, spy, outcomes = _train(perturb_test=False)
    assert len(spy.observed) == 3
    for seen, outcome in zip(spy.observed, outcomes):
        assert seen and all(name.startswith("val_") for name in seen)
        assert "accuracy" in outcome.global_metrics and "accuracy" not in seen  # logged, not shown
        assert seen == {k: v for k, v in outcome.global_metrics.items() if k.startswith("val_")}
    assert spy.report_metrics and all("local_accuracy" not in names and "train_accuracy" in names for names in spy.report_metrics)
    assert all("local_accuracy" in r.metrics for outcome in outcomes for r in outcome.reports)  # still logged
    assert np.isfinite(spy.global_loss) and spy.global_loss == spy.observed[-1]["val_loss"]


def test_perturbed_test_data_leave_the_training_trajectory_bitwise_unchanged() -> None:
    plain, plain_spy, plain_outcomes = _train(perturb_test=False)
    perturbed, perturbed_spy, perturbed_outcomes = _train(perturb_test=True)
    # the perturbation is visible where test scores are logged...
    assert plain_outcomes[-1].global_metrics["loss"] != perturbed_outcomes[-1].global_metrics["loss"]
    assert [s["loss"] for s in plain_outcomes[-1].hospital_scores.values()] != [
        s["loss"] for s in perturbed_outcomes[-1].hospital_scores.values()]
    # ...and nowhere in what the strategy learned or the model it trained
    assert plain_spy.mus == perturbed_spy.mus and plain_spy.observed == perturbed_spy.observed
    assert plain.keys() == perturbed.keys()
    for name, array in plain.items():
        assert np.array_equal(array, perturbed[name]), name


def test_a_dataset_without_validation_gets_a_stratified_one_carved_from_training() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3, dtype=np.int64), [100, 60, 40])
    images = rng.integers(0, 255, (200, 1, 8, 8), dtype=np.uint8)
    images[:, 0, 0, :2] = np.stack([np.arange(200) // 255, np.arange(200) % 255], axis=1)  # rows told apart
    test = ImageSet(images[:10], labels[:10])
    dataset = ImageDataset("no-val", ("a", "b", "c"), ImageSet(images, labels), None, test)
    carved = with_validation(dataset, 0.1, seed=3)
    assert len(carved.val) == 20 and len(carved.train) == 180
    np.testing.assert_array_equal(np.bincount(carved.val.labels), [10, 6, 4])  # class shares kept
    keys = lambda split: {tuple(row) for row in split.images[:, 0, 0, :2]}  # noqa: E731
    assert not keys(carved.val) & keys(carved.train) and keys(carved.val) | keys(carved.train) == keys(dataset.train)
    assert carved.test is test
    np.testing.assert_array_equal(with_validation(dataset, 0.1, seed=3).val.labels, carved.val.labels)  # seeded
    assert with_validation(carved, 0.5, seed=1) is carved  # an official split is kept as it is
    config = load_config(None, ["data.source={kind: custom}", "data.validation_fraction=0.25"])
    assert len(load_dataset(config.data, 0, given=dataset).val) == 50


def test_test_metrics_are_not_a_fedmrl_reward() -> None:
    with pytest.raises(ConfigError, match="strategy.reward"):
        load_config(None, ["strategy={name: fedmrl, reward: accuracy}"])


@pytest.mark.parametrize(
    "partition",
    [
        "{scheme: dirichlet, alpha: 0.5}",
        "{scheme: shards, eta: 1.0, shards_per_class: 10}",
        "{scheme: pathological, classes_per_hospital: 2}",
        "{scheme: authors_shards, shards_per_class: 200, samples_per_shard: 5}",
        "{scheme: authors_shards, eta: 0.5, shards_per_class: 40, samples_per_shard: 3}",
    ],
)
def test_no_hospital_is_tested_on_an_image_any_hospital_trains_on(partition: str) -> None:
    """The authors' shard draw lets hospitals share images; a hospital's local test split must
    still hold only images no hospital trains on (and local tests must not share images)."""
    from fedsim.data.federation import build_federation

    config = load_config(None, [
        "data.source={kind: synthetic, classes: 3, train_samples: 900, test_samples: 30}",
        "data.hospitals=5", f"data.partition={partition}", "data.local_test_fraction=0.2",
    ])
    federation = build_federation(config.data, seed=4)
    trained_on = np.concatenate(federation.train_parts)
    tests = np.concatenate(federation.test_parts)
    assert all(len(part) for part in federation.test_parts)
    assert not np.intersect1d(tests, trained_on).size
    assert len(np.unique(tests)) == len(tests)
    if "authors_shards" in partition:  # the held-out images are shared out by each hospital's label mix
        labels = federation.train_labels
        for train, test in zip(federation.train_parts, federation.test_parts):
            train_mix, test_mix = (np.bincount(labels[p], minlength=3) / len(p) for p in (train, test))
            assert np.abs(train_mix - test_mix).max() < 0.1
