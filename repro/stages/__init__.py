"""The pipeline's stages, each a Hydra application over ``conf/`` (or over ``params.yaml`` when
dvc.yaml runs it with ``--config-dir . --config-name params``):

``data`` (generate a synthetic dataset), ``train``, ``infer``, ``evaluate``, ``profile``,
``report``; ``compose`` writes ``params.yaml``; ``shard`` is the task the Hydra launchers run.
Run one with ``python -m repro.stages.<stage> [overrides]``, e.g.
``python -m repro.stages.infer method=oracle dataset=synth_default``.
"""
