"""Spark as the engine against this machine's own parallelism, every ratio measured in one run.

    python benchmarks/spark_scaling.py [--clips-per-word 100] [--repeat 10] [--simulations 4] [--ae-epochs 20]
        [--unlabelled 1200] [--output benchmarks/spark_scaling.json]

Needs `pip install -e ".[spark]"` and Java 17+. On a synthetic corpus (generated once into the cache), with a
SQLite store in a temporary folder (executors of `local-cluster` run on this machine and reach it):

- **featurize**, clips/s of `features.featurize_files` over every clip of the corpus, listed `--repeat` times (so
  that per-task start-up costs weigh as they would on a large corpus): in this process, in the
  local worker-process pool (2 workers), and as Spark tasks on `local-cluster[1,1,1024]` and
  `local-cluster[2,1,1024]` (1 and 2 executor JVMs of one core each). Each cluster is started, and its Python
  workers warmed by a small job, before the timing: the cluster's start is not part of the step's throughput.
- **embed**, clips/s logged by the `embed` step (reading, MFCC, encoder) for the same list (a text file of paths):
  the pyfunc in this process (loaded before the timing), and `spark_udf` on 1 and 2 executors (each executor's
  loading of the encoder inside the timing).
- **simulations per hour**: `main` with `--simulations` simulations in the local pool of 2 worker processes and
  on `local-cluster[2,1,1024]` (the same 2 cores): from the first simulation's start to the last one's end, and
  the mean duration of one simulation (its per-task cost, one core).

Printed as a table and written to `--output` as JSON (what docs/SCALE.md projects from).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ONE, TWO = "local-cluster[1,1,1024]", "local-cluster[2,1,1024]"


def simulation_timing(parent_run_id: str) -> dict:
    """Span of the simulations of a main run (first start to last end) and their mean duration, in seconds."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                            "tags.`spatial_ae.step` = 'simulation'")
    span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    mean = sum(r.info.end_time - r.info.start_time for r in runs) / len(runs) / 1000
    return {"simulations": len(runs), "span_s": span, "per_simulation_s": mean,
            "simulations_per_hour": len(runs) / span * 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips-per-word", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--simulations", type=int, default=4)
    parser.add_argument("--ae-epochs", type=int, default=20)
    parser.add_argument("--unlabelled", type=int, default=1200)
    parser.add_argument("--output", default="benchmarks/spark_scaling.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="spark_scaling-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["SPATIAL_AE_ENCODER_NAME"] = "spark-scaling-encoder"

    import mlflow

    from spatial_ae.runs import spark
    from spatial_ae.steps.embed import embed
    from spatial_ae.data.features import featurize_files
    from spatial_ae.params import arguments
    from spatial_ae.data.synthetic import synthetic_corpus
    from spatial_ae.runs.workflow import main as run_main

    corpus = synthetic_corpus(clips_per_word=args.clips_per_word, seed=0, progress=False)
    files = sorted(corpus.rglob("*.wav")) * args.repeat
    listing = folder / "clips.txt"
    listing.write_text("".join(f"{file}\n" for file in files))
    results = {"clips": len(files), "cores": os.cpu_count(), "load_average": os.getloadavg()[0]}
    raw = dict(dataset="synthetic", synthetic_clips_per_word=args.clips_per_word, unlabeled_set_size=args.unlabelled,
               lbl_trai_size=150, lbl_test_size=300, ae_epochs=args.ae_epochs, patience=5, dnn_epochs=20,
               cnn_epochs=10, num_simulations=args.simulations, results_path=str(folder / "results"))

    def clips_per_second(**options) -> float:
        started = time.monotonic()
        table = featurize_files(files, progress=False, **options)
        return int(table.ok.sum()) / (time.monotonic() - started)

    def embedded(master: str, name: str) -> float:
        output = embed(f"models:/{os.environ['SPATIAL_AE_ENCODER_NAME']}@champion", str(listing),
                       str(folder / name), spark.cluster(master))
        run = mlflow.search_runs(filter_string="tags.`spatial_ae.step` = 'embed'", order_by=["start_time DESC"],
                                 max_results=1, output_format="list")[0]
        assert Path(output).exists()
        return run.data.metrics["clips_per_second"]

    mlflow.set_experiment("local")
    results["featurize_here"] = clips_per_second(workers=0)
    results["featurize_pool_2"] = clips_per_second(workers=2)
    local = run_main(**arguments("main", raw | {"parallel_simulations": 2}))
    results["simulations_pool_2"] = simulation_timing(local)
    results["embed_here"] = embedded("", "embed-here")
    for master, label in ((ONE, "1_executor"), (TWO, "2_executors")):
        started = time.monotonic()
        list(spark.Cluster(master).map_chunks(len, [("warm",)] * 4))  # start the cluster and its Python workers
        results[f"cluster_start_{label}_s"] = time.monotonic() - started
        results[f"featurize_{label}"] = clips_per_second(map_chunks=spark.Cluster(master).map_chunks)
        results[f"embed_{label}"] = embedded(master, f"embed-{label}")
    mlflow.set_experiment("spark")
    on_spark = run_main(**arguments("main", raw | {"spark_master": TWO}))
    results["simulations_local_cluster_2"] = simulation_timing(on_spark)
    results["ratios"] = {
        "featurize_2_vs_1_executor": results["featurize_2_executors"] / results["featurize_1_executor"],
        "featurize_2_executors_vs_pool_2": results["featurize_2_executors"] / results["featurize_pool_2"],
        "embed_2_vs_1_executor": results["embed_2_executors"] / results["embed_1_executor"],
        "simulations_per_hour_spark_vs_pool": results["simulations_local_cluster_2"]["simulations_per_hour"]
        / results["simulations_pool_2"]["simulations_per_hour"]}
    Path(args.output).write_text(json.dumps(results, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    for name, value in results.items():
        print(f"{name:38s} {json.dumps(value) if isinstance(value, dict) else f'{value:.1f}'}")


if __name__ == "__main__":
    main()
