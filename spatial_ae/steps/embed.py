"""The embed step: a registered encoder applied to a corpus, the embeddings written as Parquet.

The clips are read here, by this package's reader (the user's own files, as `predict` reads them), and the
encoder is sent their samples: it never reads a path, so SPATIAL_AE_AUDIO_ROOT stays unset and no input can make
the model read other files (docs/RELIABILITY.md). Without `spark_master` the pyfunc runs in this process; with
it, executors read the clips (mapInPandas over the file list) and embed them with `mlflow.pyfunc.spark_udf`.
Output: a Parquet folder (`path`, `embedding` float array, and `word` where the folder says); the run logs the
clips embedded and skipped (listed in `embed/skipped_clips.csv`) and the throughput.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np

from spatial_ae.mlflow_io import registry, tracking
from spatial_ae.mlflow_io.pyfunc import CLIPS_PER_CALL
from spatial_ae.data.audio import MAX_ABS_SAMPLE, AudioError, load_clip, wav_files
from spatial_ae.errors import UserError

log = logging.getLogger(__name__)



def check_embed_paths(corpus: str, output_path: str, spark_master: str = "") -> None:
    """Before any work: the corpus exists and the output is a new path (nothing is overwritten), a URI only where
    a Spark cluster writes it."""
    if not Path(corpus).expanduser().exists():
        raise UserError(f"corpus {corpus!r} does not exist. Fix: pass -P corpus=<a folder of WAV files or a text "
                        f"file of their paths>")
    if "://" in output_path and not spark_master:
        raise UserError(f"output_path {output_path!r} is a URI, which only a Spark cluster writes. Fix: pass "
                        f"-P spark_master=... or a local folder as -P output_path=...")
    output = Path(output_path).expanduser()
    if "://" not in output_path and output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise UserError(f"output_path {output_path!r} already exists. Fix: pass a new -P output_path=... or "
                        f"remove it")


def corpus_files(corpus: str) -> tuple[list[str], list[str] | None]:
    """The absolute WAV paths of a corpus and their words: a folder (searched recursively; a clip in
    <word>/... has that word) or a text file of paths (relative ones from its folder; no words)."""
    root = Path(corpus).expanduser().absolute()
    if root.is_dir():
        files = wav_files(root)
        parts = [file.relative_to(root).parts for file in files]
        words = [p[0] if len(p) > 1 else None for p in parts]
        return [str(file) for file in files], words if any(words) else None
    lines = [line.strip() for line in root.read_text(encoding="utf-8-sig").splitlines()]
    files = [str(root.parent / Path(line).expanduser()) for line in lines if line and not line.startswith("#")]
    if not files:
        raise UserError(f"{root} lists no paths. Fix: write one WAV path per line")
    return files, None


def embed(encoder_uri: str, corpus: str, output_path: str, cluster=None) -> str:
    """Embed every readable clip of `corpus` with the encoder, write Parquet to `output_path` (returned).
    `cluster` (runs.spark.Cluster): its executors read and embed the clips."""
    params = dict(encoder_uri=encoder_uri, corpus=corpus, output_path=output_path,
                  spark_master="" if cluster is None else cluster.master)
    tracking.check_tracking_server()
    check_embed_paths(corpus, output_path, "" if cluster is None else cluster.master)
    files, words = corpus_files(corpus)
    output = output_path if "://" in output_path else str(Path(output_path).expanduser().absolute())
    if cluster is not None and Path(output).is_dir():
        Path(output).rmdir()  # an empty folder (check_embed_paths): Spark writes only to a path that is new
    fix = f"pass -P encoder_uri=models:/{registry.ENCODER_NAME}/N of a registered encoder (run main or pretrain first)"
    model = registry.load(encoder_uri, mlflow.pyfunc.load_model if cluster is None else mlflow.models.get_model_info,
                          fix)
    with tracking.step_run("embed", params, run_name="embed"):
        started = time.monotonic()
        skipped = (_embed_here(model, files, words, output) if cluster is None
                   else cluster.embed_files(encoder_uri, files, words, output))
        seconds = time.monotonic() - started
        embedded = len(files) - len(skipped)
        mlflow.log_metrics({"embedded_clips": embedded, "skipped_clips": len(skipped), "embed_seconds": seconds,
                            "clips_per_second": embedded / seconds})
        with tempfile.TemporaryDirectory() as tmp:
            import pandas as pd

            pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(Path(tmp) / "skipped_clips.csv", index=False)
            mlflow.log_artifacts(tmp, "embed")
        if not embedded:
            raise UserError(f"none of the {len(files)} clips of {corpus} could be read (e.g. {skipped[0][1]}). "
                            f"Fix: pass WAV files (16-bit PCM)")
    message = (f"embed: {embedded} clips -> {output} ({len(skipped)} unreadable, skipped; "
               f"{embedded / seconds:.1f} clips/s)")
    log.info(message)
    print(message, flush=True)
    return output


def _embed_here(model, files: list[str], words: list[str] | None, output: str) -> list[tuple[str, str]]:
    """The pyfunc in this process, CLIPS_PER_CALL clips per call, written as one Parquet file; returns the skipped clips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [("path", pa.string()), ("embedding", pa.list_(pa.float32()))] + ([("word", pa.string())] if words else [])
    schema = pa.schema(fields)
    Path(output).mkdir(parents=True, exist_ok=True)
    skipped = []
    with pq.ParquetWriter(Path(output) / "part-00000.parquet", schema) as writer:
        for start in range(0, len(files), CLIPS_PER_CALL):
            rows, clips = [], []
            for row in range(start, min(start + CLIPS_PER_CALL, len(files))):
                try:
                    clips.append(load_clip(files[row], max_abs=MAX_ABS_SAMPLE))
                    rows.append(row)
                except AudioError as error:
                    log.warning("skipped %s", error)
                    skipped.append((files[row], str(error)))
            if not rows:
                continue
            embeddings = np.asarray(model.predict(np.stack(clips)), dtype=np.float32)
            columns = {"path": [files[row] for row in rows], "embedding": list(embeddings)}
            if words:
                columns["word"] = [words[row] for row in rows]
            writer.write_table(pa.table(columns, schema=schema))
    return skipped
