"""THE DRIVER SIDE: CPU work (Optuna, Ray Tune, MLflow); it never trains.

    suggest  a mentee config from an Optuna trial, the sampler
    plan     what a sweep will do, validated before anything is written
    driver   asks Optuna for cohorts, records results (MLflow, then Optuna)
    raytune  the cohort searcher and the recording callback
    resume   rebuild the driver's state after an interruption
    run      run_sweep: the composition of the above
"""

from search.sweep.run import SweepSummary, run_sweep

__all__ = ["run_sweep", "SweepSummary"]
