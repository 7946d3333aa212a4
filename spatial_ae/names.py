"""The project's vocabulary: MLflow tag keys, the evaluated models' names and titles, shared artifact folders.

Each string is defined here once, so that a module can read runs and artifacts another module wrote without
importing it: this module imports nothing, and modules that would load TensorFlow or MLflow only to learn a
name import it instead.
"""

# MLflow tags of every step run (spatial_ae.mlflow_io.tracking)
STEP_TAG = "spatial_ae.step"  # the step that made the run: featurize, simulation, main, ...
KEY_TAG = "spatial_ae.key"  # the settings digest a finished run is reused by
PROCESS_TAG = "spatial_ae.process"  # host:pid:start time of the process that ran the run
INTERRUPTED_TAG = "spatial_ae.interrupted"  # "received signal N" on runs ended KILLED
DIGEST_TAG = "spatial_ae.sha256."  # + artifact folder: digest of the folder as logged
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows, of runs and experiments
REUSED_RUN_TAG = "spatial_ae.reused_run_id"  # on a featurize run that stands in for an earlier identical one

# The workflow's runs: a main run, the parent of simulation runs
SIMULATION = "simulation"  # the step tag of a simulation run
WORKFLOW_TAG = "spatial_ae.workflow_key"  # on a main run and its simulations: their configuration's digest
SIMULATION_TAG = "spatial_ae.simulation"  # a simulation's index, 1..num_simulations
SIMULATION_RUNS_TAG = "spatial_ae.simulation_run_ids"  # the simulations a main run summarised, its own or reused

# Model version tags of a registered encoder (spatial_ae.mlflow_io.registry)
ACCURACY_TAG = "downstream_accuracy"  # the embedding DNN's test accuracy: reported, never used to choose
SELECTION_TAG = "validation_accuracy"  # its accuracy on the early-stopping clips: what `champion` is chosen on
CI_TAG = "accuracy_ci95"  # mean and 95% CI of the embedding DNN's test accuracy over the simulations

# The models the evaluate step trains (their builders: spatial_ae.method.models.CATALOGUE). A name prefixes the
# model's metrics (`<name>_accuracy`, ...) and artifacts (`confusion_<name>.csv`).
EMBEDDING_DNN = "embedding_dnn"  # the DNN probe on an encoder's embeddings
MFCC_DNN = "mfcc_dnn"  # the same probe on the standardised MFCC: separates the representation from the classifier
MFCC_CNN = "mfcc_cnn"  # the paper's benchmark
MODEL_TITLES = {  # name -> title in tables and figures; the order of the sweep's rows
    EMBEDDING_DNN: "encoder embeddings + DNN",
    MFCC_DNN: "standardised MFCC + DNN",
    MFCC_CNN: "MFCC + CNN (benchmark)",
}
MODELS = tuple(MODEL_TITLES)
COMPARED = (EMBEDDING_DNN, MFCC_CNN)  # the paper's comparison: every simulation has both, paired by simulation
DIFFERENCE_TITLE = "embeddings + DNN minus MFCC + CNN"  # what the paired difference is
KWS = "kws"  # the keyword spotter's metric prefix (spatial_ae.steps.kws)

# Artifact folders one step writes and another reads
FEATURES_DIR = "features"  # a featurize run's feature set
EVALUATION_DIR = "evaluation"  # an evaluate (simulation) run's tables, read by the summary

# Environment variables a step sets for the processes it starts
TENSORBOARD_VARIABLE = "SPATIAL_AE_TENSORBOARD"  # "1": TensorBoard logs of every fit (the tensorboard parameter)
