"""mentee-search: find the best small network a device can hold.

A trained mentor supervises many small mentees; Ray Tune schedules them in fused
cohorts, Optuna chooses what to try, MLflow records accuracy against size and cost.

    from search.spaces import load_space
    from search.sweep.run import run_sweep
    summary = run_sweep(load_space("spaces/mnist1d.yaml"))

Modules (one job each): spaces (YAML → SearchSpace), data (datasets), models (mentee
families, mentors, taps), distill (loss, mentor cache, fused cohort training), mentor
(train or load), measure (cost), trial (what a Ray trial runs), tune (the sweep
driver), tracking (MLflow), pareto (fronts, budgets, gains), export (ONNX /
TorchScript), cli (the `mentee` command). Submodules are imported on use, so the CLI
starts fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
