"""Training one run in one process or one of N DDP processes: the train loop
(``train``), the optimizer and its schedule (``optim``), evaluation (``evaluate``),
checkpoints (``checkpoint``), the device and precision (``device``), the DDP process
group (``ddp``), tracking sinks (``loggers``), progress output (``progress``) and what a
run records of its provenance (``provenance``).

May import: plan, models, data, config, store, registries, errors. Starts no process
(that is ``fusion_lab.orchestrate.spawn``'s job).
"""
