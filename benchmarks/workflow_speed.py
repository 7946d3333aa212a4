"""The whole `main` workflow, the project's way against the straightforward implementation, in one run.

    python benchmarks/workflow_speed.py [--paper-sizes] [--unlabelled 1000] [--labelled 150] [--test 300]
        [--simulations 2] [--ae-epochs 20] [--dnn-epochs 20] [--cnn-epochs 10] [--patience 5]
        [--clips-per-word 100] [--repeats 1]

`--paper-sizes` sets the paper's 12,000 unlabelled, 3,000 labelled (6,000 drawn) and 6,000 test clips on a
synthetic corpus of 2,000 clips per word (60,000 clips, ~6,000 in each list, as Speech Commands v0.01), with
4 simulations unless --simulations says otherwise. The synthetic eSpeak NG corpus is generated once into the
usual cache ($SPATIAL_AE_CACHE or ~/.cache/spatial_ae), outside the timing.

Each workflow runs `spatial_ae.runs.workflow.main` in a fresh Python process (TensorFlow's thread pools are fixed
when it starts) with its own SQLite store in a temporary folder, so nothing is reused between them:

- **straightforward**: the paper's per-clip librosa loop for the features (`featurize_throughput.naive_features`),
  NumPy arrays into `model.fit` (`SPATIAL_AE_TRAINING=plain`), TensorFlow's default thread pools (one thread per
  core in each), the simulations one after the other (`parallel_simulations=1`);
- **project**: the defaults: `spatial_ae.data.features.featurize_files`, the tf.data training path, thread pools
  sized by `spatial_ae.runs.parallel.configure_threads`, one simulation per core in worker processes.

Everything else (models, batch 32, optimisers, seeds, early stopping, MLflow logging, registration, summary)
is the same code. The two alternate (straightforward first, then project first on the next repeat).
Printed: wall time of the workflow, of its featurize child run and of the rest, epochs run, and the test
accuracy of the three classifiers (mean ± std over simulations).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))
PATHS = ("straightforward", "project")
MODELS = ("embedding_dnn", "mfcc_cnn", "mfcc_dnn")


def naive_featurize_files(paths, relative_names=None, keep_mel=None, **_):
    """`features.featurize_files` done the paper's way: one clip at a time through librosa."""
    import numpy as np
    from featurize_throughput import naive_features

    from spatial_ae.data.features import FeatureTable

    mfcc, mel, _ = naive_features([Path(path) for path in paths])
    keep = np.ones(len(paths), bool) if keep_mel is None else np.asarray(keep_mel, bool)
    return FeatureTable(mfcc=mfcc.astype(np.float32), mel=mel[keep].astype(np.float32),
                        ok=np.ones(len(paths), bool))


def run_one(path: str, folder: Path, raw: dict) -> dict:
    """One workflow in this (fresh) process; returns its timings and accuracies."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from spatial_ae.data import features
    from spatial_ae.method import training
    from spatial_ae.params import arguments
    from spatial_ae.mlflow_io.tracking import simulation_runs
    from spatial_ae.runs.workflow import main

    if path == "straightforward":
        features.featurize_files = naive_featurize_files
        training.TRAINING_PATH = "plain"
        raw = raw | {"parallel_simulations": 1}
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("workflow_speed", artifact_location=(folder / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    start = time.perf_counter()
    parent_id = main(**arguments("main", raw | {"results_path": str(folder / "results")}))
    total = time.perf_counter() - start
    featurize = client.search_runs([experiment_id], "tags.`spatial_ae.step` = 'featurize'")[0]
    featurize_s = (featurize.info.end_time - featurize.info.start_time) / 1000
    sims = simulation_runs(parent_id)
    return {"path": path, "total_s": total, "featurize_s": featurize_s, "rest_s": total - featurize_s,
            "simulation_s": [(run.info.end_time - run.info.start_time) / 1000 for run in sims],
            "accuracy": {model: [run.data.metrics[f"{model}_accuracy"] for run in sims] for model in MODELS},
            "epochs": {prefix: [int(run.data.metrics.get(f"{prefix}_epochs_run", -1)) for run in sims]
                       for prefix in ("ae", "embedding_dnn", "mfcc_cnn", "mfcc_dnn")}}


def run_in_subprocess(path: str, folder: Path, raw: dict) -> dict:
    """`run_one` in a fresh Python process; the straightforward one keeps TensorFlow's default threads."""
    env = dict(os.environ)
    if path == "straightforward":  # TensorFlow's defaults, which spatial_ae.runs.parallel would otherwise change
        cores = str(os.cpu_count() or 1)
        env |= {"TF_NUM_INTRAOP_THREADS": cores, "TF_NUM_INTEROP_THREADS": cores}
    out = folder / "result.json"
    subprocess.run([sys.executable, __file__, "--run-one", path, "--folder", str(folder), "--raw", json.dumps(raw)],
                   check=True, env=env)
    return json.loads(out.read_text())


def mean_std(values) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-sizes", action="store_true", help="12,000 / 3,000 / 6,000 clips, 4 simulations")
    parser.add_argument("--clips-per-word", type=int, default=None, help="synthetic corpus size per word")
    parser.add_argument("--unlabelled", type=int, default=None, help="unlabeled_set_size (paper: 12,000)")
    parser.add_argument("--labelled", type=int, default=None, help="lbl_trai_size (paper: 3,000)")
    parser.add_argument("--test", type=int, default=None, help="lbl_test_size (paper: 6,000)")
    parser.add_argument("--simulations", type=int, default=None, help="num_simulations (paper: 10)")
    parser.add_argument("--ae-epochs", type=int, default=20)
    parser.add_argument("--dnn-epochs", type=int, default=20)
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of workflows (the order alternates)")
    parser.add_argument("--first", choices=PATHS, default=PATHS[0], help="the path that runs first in repeat 0")
    parser.add_argument("--run-one", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.run_one:
        result = run_one(args.run_one, args.folder, json.loads(args.raw))
        (args.folder / "result.json").write_text(json.dumps(result))
        return

    sizes = (2000, 12000, 3000, 6000, 4) if args.paper_sizes else (100, 1000, 150, 300, 2)
    given = (args.clips_per_word, args.unlabelled, args.labelled, args.test, args.simulations)
    clips_per_word, unlabelled, labelled, test, simulations = (g if g is not None else d for g, d in zip(given, sizes))
    raw = dict(dataset="synthetic", unlabeled_set_size=unlabelled, lbl_trai_size=labelled, lbl_test_size=test,
               synthetic_clips_per_word=clips_per_word, ae_epochs=args.ae_epochs, patience=args.patience,
               dnn_epochs=args.dnn_epochs, cnn_epochs=args.cnn_epochs, num_simulations=simulations)
    print(f"configuration: {raw}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    from spatial_ae.data.synthetic import synthetic_corpus

    synthetic_corpus(clips_per_word=clips_per_word, seed=0)  # generated once, not timed
    rows = []
    with tempfile.TemporaryDirectory(prefix="workflow_speed-") as tmp:
        for repeat in range(args.repeats):
            pair = []
            order = PATHS if args.first == PATHS[0] else PATHS[::-1]
            for path in (order if repeat % 2 == 0 else order[::-1]):
                folder = Path(tmp) / f"{path}-{repeat}"
                folder.mkdir()
                row = run_in_subprocess(path, folder, raw)
                pair.append(row)
                print(f"repeat {repeat} {path:15s}: workflow {row['total_s']:.1f} s (featurize {row['featurize_s']:.1f} s, "
                      f"simulations + summary {row['rest_s']:.1f} s; simulations "
                      + ", ".join(f"{s:.0f}" for s in row["simulation_s"]) + " s), epochs "
                      + ", ".join(f"{p} {e}" for p, e in row["epochs"].items()) + "; accuracy "
                      + ", ".join(f"{m} {mean_std(v)}" for m, v in row["accuracy"].items())
                      + f" (load {os.getloadavg()[0]:.1f})", flush=True)
            rows.append({r["path"]: r for r in pair})
    for repeat, pair in enumerate(rows):
        slow, fast = pair["straightforward"], pair["project"]
        print(f"repeat {repeat}: straightforward / project: end to end x{slow['total_s'] / fast['total_s']:.2f}, "
              f"featurize x{slow['featurize_s'] / fast['featurize_s']:.2f}, "
              f"simulations + summary x{slow['rest_s'] / fast['rest_s']:.2f}")
        for model in MODELS:  # simulation k has the same seed, labelled sample and test clips in both paths
            differences = [f - s for f, s in zip(fast["accuracy"][model], slow["accuracy"][model])]
            difference = statistics.mean(differences)
            spread = statistics.stdev(slow["accuracy"][model]) if len(slow["accuracy"][model]) > 1 else 0.0
            print(f"  {model}: straightforward " + " ".join(f"{a:.3f}" for a in slow["accuracy"][model])
                  + " | project " + " ".join(f"{a:.3f}" for a in fast["accuracy"][model])
                  + f" | mean difference {difference:+.3f} (straightforward std {spread:.3f}: "
                  + f"{'within' if abs(difference) <= spread else 'NOT within'} one std)")


if __name__ == "__main__":
    main()
