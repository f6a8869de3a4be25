"""The reading side: what a sweep found, as a user reads it. Reads what search.tracking returns;
never imports the driver (search/sweep/) or Optuna (tests/test_layout.py checks it).

    fronts     the front with its gains, the two arms at every size, the arms' balance
    pick       the best mentee within budgets or a device's profile
    table      frames as aligned text, csv, json, markdown
    dashboard  one offline HTML file: accuracy against every cost axis, devices, the pick
    export     ONNX (int8) and TorchScript, checked against the torch model and a device's flash

Submodules are imported on use (`from search.results.pick import pick`): the CLI starts fast and
a script that reads a front does not load torch.
"""
