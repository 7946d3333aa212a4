"""The whole `main` workflow with the project's training path against the straightforward one, in one run.

    python benchmarks/workflow_speed.py [--unlabelled 1000] [--labelled 150] [--test 300] [--simulations 2]
                                        [--ae-epochs 20] [--dnn-epochs 20] [--cnn-epochs 10] [--repeats 1]

Each workflow runs `spatial_ae.workflow.main` on the synthetic eSpeak NG corpus (generated once into the
usual cache, `$SPATIAL_AE_CACHE` or ~/.cache/spatial_ae) with its own SQLite MLflow store in a temporary
folder (so nothing is reused between them: featurize, pretraining and evaluation all run every time).
The training path is switched with `spatial_ae.training.TRAINING_PATH` ("plain": NumPy arrays into
`model.fit`; "fast": the project's tf.data path); everything else is identical. The two alternate
(plain, fast, then fast, plain on the next repeat) so that a busy machine slows both alike.

Printed: wall time of the workflow, of its featurize child run and of the rest (the simulations and the
summary), and the test accuracy of the embedding DNN and the MFCC-CNN (mean ± std over simulations).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_workflow(path: str, folder: Path, raw: dict) -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    from spatial_ae import training
    from spatial_ae.params import parse_step_params
    from spatial_ae.workflow import main, simulation_runs

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("workflow_speed", artifact_location=(folder / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    training.TRAINING_PATH = path
    start = time.perf_counter()
    parent_id = main(**parse_step_params("main", raw | {"results_path": str(folder / "results")}))
    total = time.perf_counter() - start
    featurize = client.search_runs([experiment_id], "tags.`spatial_ae.step` = 'featurize'")[0]
    featurize_s = (featurize.info.end_time - featurize.info.start_time) / 1000
    sims = simulation_runs(parent_id)
    accuracy = {model: [run.data.metrics[f"{model}_accuracy"] for run in sims]
                for model in ("embedding_dnn", "mfcc_cnn", "mfcc_dnn")}
    epochs = {"ae": [int(run.data.metrics.get("ae_epochs_run", -1)) for run in sims]}
    return {"path": path, "total_s": total, "featurize_s": featurize_s, "rest_s": total - featurize_s,
            "accuracy": accuracy, "ae_epochs": epochs["ae"]}


def mean_std(values) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips-per-word", type=int, default=100, help="synthetic corpus size per word")
    parser.add_argument("--unlabelled", type=int, default=1000, help="unlabeled_set_size (paper: 12,000)")
    parser.add_argument("--labelled", type=int, default=150, help="lbl_trai_size (paper: 3,000)")
    parser.add_argument("--test", type=int, default=300, help="lbl_test_size (paper: 6,000)")
    parser.add_argument("--simulations", type=int, default=2, help="num_simulations (paper: 10)")
    parser.add_argument("--ae-epochs", type=int, default=20)
    parser.add_argument("--dnn-epochs", type=int, default=20)
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of workflows (plain and fast alternate)")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    raw = dict(dataset="synthetic", unlabeled_set_size=args.unlabelled, lbl_trai_size=args.labelled,
               lbl_test_size=args.test, synthetic_clips_per_word=args.clips_per_word, ae_epochs=args.ae_epochs,
               patience=args.patience, dnn_epochs=args.dnn_epochs, cnn_epochs=args.cnn_epochs,
               num_simulations=args.simulations)
    print(f"configuration: {raw}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    from spatial_ae.synthetic import synthetic_corpus

    synthetic_corpus(clips_per_word=args.clips_per_word, seed=0, progress=False)  # generated once, not timed
    rows = []
    with tempfile.TemporaryDirectory(prefix="workflow_speed-") as tmp:
        for repeat in range(args.repeats):
            for path in (("plain", "fast") if repeat % 2 == 0 else ("fast", "plain")):
                folder = Path(tmp) / f"{path}-{repeat}"
                folder.mkdir()
                row = run_workflow(path, folder, raw)
                rows.append(row)
                print(f"repeat {repeat} {path:5s}: workflow {row['total_s']:.1f} s (featurize {row['featurize_s']:.1f} s, "
                      f"simulations + summary {row['rest_s']:.1f} s), ae epochs {row['ae_epochs']}, accuracy "
                      + ", ".join(f"{m} {mean_std(v)}" for m, v in row["accuracy"].items())
                      + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    for repeat in range(args.repeats):
        plain = next(r for r in rows[2 * repeat: 2 * repeat + 2] if r["path"] == "plain")
        fast = next(r for r in rows[2 * repeat: 2 * repeat + 2] if r["path"] == "fast")
        print(f"repeat {repeat}: plain / fast: end to end x{plain['total_s'] / fast['total_s']:.2f}, "
              f"without featurize x{plain['rest_s'] / fast['rest_s']:.2f}")


if __name__ == "__main__":
    main()
