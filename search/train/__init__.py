"""THE TRIAL SIDE: torch training only (never Optuna, MLflow or Ray Tune's driver API).

    losses   the loss terms of the mentee loss (a registry)
    cache    the mentor's logits and tapped features, computed once
    group    a fused group: K members of one structure stacked and vmapped
    optim    the learning-rate schedule
    device   device, autocast, a CUDA stream per group
    cohort   train_cohort: groups, epochs, successive halving, results
    mentor   train or load a mentor
    trial    the function a Ray Tune trial runs
"""
