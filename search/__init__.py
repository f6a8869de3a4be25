"""mentee-search: find the best small network a device can hold.

A trained mentor supervises many small mentees; Ray Tune schedules them in fused
cohorts, Optuna chooses what to try, MLflow records accuracy against size and cost.

    from search.spaces import load_space
    from search.sweep.run import run_sweep
    summary = run_sweep(load_space("spaces/mnist1d.yaml"))

Modules (one job each; submodules are imported on use, so the CLI starts fast):

    config     the contracts every room shares: MemberConfig, CohortSpec, TrialPayload, results
    spaces     YAML → a validated SearchSpace
    safe_yaml  YAML read bounded (nesting, aliases) and plain-data only: spaces and device files
    data       datasets, split once by a seed
    models     mentee families (a registry) and fused groups' templates
    taps       layers read by name through forward hooks; projections between tap shapes
    mentors    a mentor (network + taps) and its file: save_mentor, load_mentor
    measure    params, weight bytes, SRAM, MACs, latency
    devices    device profiles and their budgets
    pareto     front math both sides share: fronts, paired gains, budgets, hypervolume
    results/   THE READING SIDE: front views, pick, dashboard, export (never imports sweep/ or Optuna)
    progress   a progress bar, quiet off a terminal
    errors     UserError (one line, exit 2) and the other exceptions a user sees
    train/     THE TRIAL SIDE (torch only): loss terms, mentor cache, fused cohorts, the Ray trial
    sweep/     THE DRIVER SIDE (never trains): Optuna, plan, driver, Ray Tune glue, resume, run_sweep
    tracking/  MLflow: the writer, reading back, the model registry, the journal
    cli/       the `mentee` command, one module a group of commands (mentor, sweep, front, ui)
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
