"""The goal tally that bench/README.md shows is computed from the results file, so its counts cannot drift from the
data the way hand-written counts did (the README once said 13 runs at or above random where the data had 15)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while they are built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def seed(full: float, curated: float, random_subset: float, fraction: float = 0.52) -> list[dict]:
    return [
        {"variant": "full", "accuracy": full, "fraction": 1.0},
        {"variant": "dqe_centroid", "accuracy": curated, "fraction": fraction},
        {"variant": "random_centroid", "accuracy": random_subset, "fraction": fraction},
    ]


def results_of(runs: dict[str, dict[str, list[dict]]]) -> dict:
    return {
        "runs": {
            f"dqe/encoder/{dataset}": {"part": "dqe", "model": "encoder", "dataset": dataset, "kind": None, "rate": None,
                                       "seeds": seeds}
            for dataset, seeds in runs.items()
        }
    }


def test_the_goal_tally_counts_ties_as_reaching_the_full_set_and_averages_per_data_set(quality):
    results = results_of({
        "mr": {"0": seed(0.80, 0.80, 0.79), "1": seed(0.80, 0.78, 0.785, fraction=0.55)},
        "cr": {"0": seed(0.90, 0.905, 0.91)},
    })

    outcomes = quality.curated_outcomes(results, "encoder")["dqe_centroid"]
    assert [(o["dataset"], o["seed"]) for o in outcomes] == [("mr", "0"), ("mr", "1"), ("cr", "0")]
    assert [round(o["vs_full"], 6) for o in outcomes] == [0.0, -2.0, 0.5]
    assert [round(o["vs_random"], 6) for o in outcomes] == [1.0, -0.5, -0.5]

    row = quality.dqe_goal_table(results, "encoder").splitlines()[2]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # MR's mean gap is -1.0 (within a point), CR's +0.5 (at or above full).
    assert cells == ["DQE `centroid`", "3", "2", "1", "-0.50 (-2.0 to +0.5)", "1 / 2 of 2", "+0.00", "52%–55%"]


def test_the_goal_tally_ignores_the_other_model_and_the_noise_part(quality):
    results = results_of({"mr": {"0": seed(0.80, 0.81, 0.79)}})
    results["runs"]["dqe/linear/mr"] = {**results["runs"]["dqe/encoder/mr"], "model": "linear",
                                        "seeds": {"0": seed(0.80, 0.70, 0.75)}}
    results["runs"]["noise/encoder/mr"] = {**results["runs"]["dqe/encoder/mr"], "part": "noise"}

    rows = quality.dqe_goal_table(results, "encoder").splitlines()[2:]
    assert len(rows) == 1
    assert "| 1 | 1 | 1 | +1.00 (+1.0 to +1.0) |" in rows[0]


def noise_seed(noisy_full: float, curated: float, p_curated: float, f1: float) -> list[dict]:
    return [
        {"method": "noisy_full", "accuracy": noisy_full},
        {"method": "dqe_both_cl", "accuracy": curated, "f1": f1, "flag_seconds": 2.0,
         "vs_noisy_full": {"p_ttest": p_curated}},
        {"method": "oracle_clean", "accuracy": noisy_full + 0.1, "vs_noisy_full": {"p_ttest": 0.001}},
    ]


def test_the_noise_goal_tally_averages_gains_over_runs_and_counts_only_significant_ones(quality):
    setting = {"part": "noise", "model": "linear", "kind": "uniform", "rate": 0.2}
    results = {"runs": {
        "noise/linear/mr/uniform/0.2": {**setting, "dataset": "mr", "seeds": {
            "0": noise_seed(0.70, 0.76, 0.001, 0.5), "1": noise_seed(0.70, 0.71, 0.40, 0.3)}},
        "noise/linear/cr/uniform/0.2": {**setting, "dataset": "cr", "seeds": {"0": noise_seed(0.80, 0.77, 0.01, 0.4)}},
    }}

    rows = quality.noise_goal_table(results, "linear").splitlines()[2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    # +6 (significant), +1 (not), -3 (significant): mean +1.33, one run above and one below.
    assert cells[0] == ["uniform 20%", "dqe_both_cl", "3", "0.400", "2.0", "+1.33", "1 / 1"]
    assert cells[1] == ["uniform 20%", "oracle_clean", "3", "", "", "+10.00", "3 / 0"]


def detailed_seed(full: float, curated: float, random_subset: float, p_full: float, p_random: float,
                  wrong: dict[str, int]) -> list[dict]:
    records = seed(full, curated, random_subset)
    records[0]["rows"] = 3012
    records[1].update(categories=wrong, vs_full={"p_ttest": p_full}, vs_random={"p_ttest": p_random})
    return records


def test_the_seed_table_lists_each_seed_in_numeric_order_with_its_gaps_p_values_and_wrong_rows(quality):
    results = results_of({"cr": {
        "10": detailed_seed(0.90, 0.88, 0.89, 0.0004, 0.2, {"uncovered": 5, "difficult": 1, "noisy": 4}),
        "2": detailed_seed(0.80, 0.81, 0.80, 0.35, 0.05, {"uncovered": 900, "difficult": 100, "noisy": 234}),
    }})

    rows = quality.dqe_seed_table(results, "encoder").splitlines()[2:]
    assert len(rows) == 1  # no seed ran `kcenter`, so it gets no row
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells == [
        "cr", "`centroid`", "2 / 10", "0.800 / 0.900 (3,012)", "0.810 / 0.880 (52%)",
        "+1.0 (0.35) / -2.0 (< 0.001)", "-0.50", "+1.0 (0.050) / -1.0 (0.20)", "+0.00", "1,234 / 234, 10 / 4",
    ]


def test_the_bench_and_the_trainers_import_without_spark_mlflow_or_deepspeed():
    # The GPU machines this bench can borrow have torch and transformers but no Spark, MLflow or DeepSpeed: the
    # quality bench (its data cleaning, the DQE procedure, the trainers) must not need them to start.
    blocked = ("pyspark", "py4j", "mlflow", "deepspeed")
    script = (
        "import sys, importlib.util\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        f"spec = importlib.util.spec_from_file_location('bench_quality', {str(BENCH)!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "import dqe.trainers\n"
        "assert not any(sys.modules.get(name) for name in " + repr(blocked) + ")\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]


def test_a_method_added_later_is_listed_where_the_code_puts_it(quality):
    older = [{"method": "noisy_full"}, {"method": "cleanlab"}]
    newer = [{"method": "noisy_full"}, {"method": "dqe_both_cl_random_folds"}, {"method": "cleanlab"}]
    grouped = quality.records_by({"seeds": {"0": older, "1": newer}}, "method")
    assert list(grouped) == ["noisy_full", "dqe_both_cl_random_folds", "cleanlab"]
    assert [len(records) for records in grouped.values()] == [2, 1, 2]


def test_noise_records_count_each_class_s_right_and_wrong_labels_and_test_recall(quality):
    """The per-class fields explain a macro-F1 drop that accuracy hides; check them against the injected flips on
    separable blobs with one rare class, fitted with the real linear trainer."""
    rng = np.random.default_rng(0)
    sizes = {"common": 150, "other": 150, "rare": 30}
    centres = {label: rng.normal(0, 6, 8) for label in sizes}

    def blobs(scale: int):
        labels = np.asarray([label for label, n in sizes.items() for _ in range(n // scale)], dtype=object)
        vectors = np.stack([centres[label] + rng.normal(0, 1, 8) for label in labels]).astype(np.float32)
        return labels, vectors, np.asarray([f"{label} {i}" for i, label in enumerate(labels)], dtype=object)

    train_labels, train_vectors, train_texts = blobs(1)
    test_labels, test_vectors, test_texts = blobs(3)
    data = quality.Dataset("blobs", "synthetic", train_texts, train_labels, train_vectors, test_texts, test_labels,
                           test_vectors, removed_by_clean=0)
    records = {r["method"]: r for r in quality.noise_runs(data, quality.Model("linear", 0, 1), "uniform", 0.2)}

    noisy, flipped = quality.inject_noise(train_labels, train_vectors, "uniform", 0.2, 0)
    classes = list(sizes)  # every class, zero counts included, named here rather than by the code under test
    unflipped = quality.count_by_class(train_labels[~flipped], classes)
    assert records["noisy_full"]["right_labels_by_class"] == unflipped
    assert records["oracle_clean"]["right_labels_by_class"] == unflipped
    assert records["noisy_full"]["wrong_labels_by_class"] == quality.count_by_class(noisy[flipped], classes)
    assert set(records["oracle_clean"]["wrong_labels_by_class"].values()) == {0}
    for record in records.values():
        assert sum(record["right_labels_by_class"].values()) == record["train_rows"] - record["flipped_in_train_rows"]
        assert sum(record["wrong_labels_by_class"].values()) == record["flipped_in_train_rows"]
        recalls = record["test_recall_by_class"]
        assert set(recalls) == set(sizes)
        # Accuracy is the recalls weighted by the test rows of each class.
        weighted = sum(recalls[label] * np.sum(test_labels == label) for label in sizes) / len(test_labels)
        assert weighted == pytest.approx(record["accuracy"])
    assert records["oracle_clean"]["test_recall_by_class"]["rare"] == 1.0
    # The capped methods flag a subset of what their uncapped twins flag, from the same fits.
    for capped, uncapped in (("dqe_both_cl_capped", "dqe_both_cl"), ("cleanlab_capped", "cleanlab")):
        assert 0 < records[capped]["flagged"] <= records[uncapped]["flagged"]
        assert records[capped]["precision"] > 0.5


def test_a_class_that_a_cleaning_emptied_counts_zero_rows(quality):
    labels = np.asarray(["common", "common", "other"], dtype=object)
    classes = np.asarray(["common", "other", "rare"], dtype=object)
    assert quality.count_by_class(labels, classes) == {"common": 2, "other": 1, "rare": 0}


def test_the_full_steps_variant_trains_the_same_curated_rows_for_the_full_set_s_optimizer_steps(
    quality, monkeypatch, tmp_path
):
    """Separates "fewer rows" from "fewer steps": the curated set and its random subset get as many optimizer steps
    as the full set, counted from the real encoder's training log, where plain (b) gets fewer."""
    monkeypatch.setattr(quality, "CACHE_DIR", tmp_path)
    rng = np.random.default_rng(0)
    words = {"weather": "rain sun wind cloud", "sport": "goal match team score"}
    labels = np.asarray([label for label in words for _ in range(80)], dtype=object)
    vectors = np.stack([rng.normal(3.0 if label == "sport" else -3.0, 1.0, 8) for label in labels]).astype(np.float32)
    texts = np.asarray([f"{words[label].split()[i % 4]} report number {i}" for i, label in enumerate(labels)],
                       dtype=object)
    data = quality.Dataset("words", "synthetic", texts, labels, vectors, texts[::8], labels[::8], vectors[::8],
                           removed_by_clean=0)

    model = quality.Model("encoder", 0, 1)
    records = {r["variant"]: r for r in quality.dqe_runs(data, model, ["centroid", "centroid_full_steps"])}

    full_steps = records["full"]["train_steps"]
    assert full_steps == 5  # 160 rows in batches of 32, one epoch
    assert records["dqe_centroid_full_steps"]["rows"] == records["dqe_centroid"]["rows"] < len(labels)
    assert records["dqe_centroid"]["train_steps"] < full_steps
    assert records["dqe_centroid_full_steps"]["train_steps"] == full_steps
    assert records["random_centroid_full_steps"]["train_steps"] == full_steps


def test_the_full_steps_variant_is_refused_for_the_linear_model(quality, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--model", "linear", "--variants", "centroid", "centroid_full_steps"])
    assert exit_info.value.code == 2
    assert "only the encoder trains by optimizer steps" in capsys.readouterr().err
