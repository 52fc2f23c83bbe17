"""Glue to other tools: logging sinks (:mod:`~latephase.integrations.sinks`: TensorBoard,
Weights & Biases) and framework callbacks (:mod:`~latephase.integrations.lightning`).

Each needs an optional package (``pip install 'latephase[tensorboard]'``, ``[wandb]``,
``[lightning]``) and says so in one line when it is missing; nothing here is imported by
``import latephase``.
"""
