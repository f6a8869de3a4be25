"""THE TRIAL SIDE: torch training only (never Optuna, MLflow or Ray Tune's driver API). The loss
terms it computes are registered in `search.terms`.

    cache    the mentor's logits and tapped features, computed once
    layout   how members of mixed depth, width and kernel pad into one template; 1-3 groups a cohort
    group    a fused group: its members' step (vmapped, CUDA graph), evaluation, results
    optim    AdamW over a group's flat parameters; lr and loss-weight schedules
    device   device, autocast, a CUDA stream per group
    cohort   train_cohort: groups, epochs, successive halving, results
    mentor   train or load a mentor
    trial    the function a Ray Tune trial runs
"""
