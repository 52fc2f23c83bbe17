"""PyTorch Lightning: :class:`CollapseCallback` measures neural collapse, the Theorem 3.2
bound and the information estimates of a LightningModule during ``Trainer.fit``.

    from latephase.integrations.lightning import CollapseCallback

    cb = CollapseCallback({"train": (x_train, y_train), "test": (x_test, y_test)},
                          run_dir="runs/my-model")          # eval_steps=None: the paper's
    trainer = L.Trainer(max_steps=20_000, callbacks=[cb])   # schedule for max_steps
    trainer.fit(module, loader)
    cb.tracker.records                                      # or latephase.load_run(...)

At every evaluation step (the optimizer step count, ``trainer.global_step``, after that
step) the callback calls :meth:`latephase.Tracker.evaluate`; step 0 is measured before the
first step.  Records go to ``run_dir`` (metrics.jsonl, summary.json; ``latephase report
RUN`` draws the figures) and, when the trainer has a logger, to ``logger.log_metrics``.
The module itself is the Tracker's model: its head is the last ``nn.Linear`` unless
``head=`` names it (further keyword arguments go to the Tracker).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from latephase.errors import TrackerError

try:
    import lightning.pytorch as pl
except ImportError as exc:  # one line, naming the extra
    raise ImportError("latephase.integrations.lightning needs the lightning package: "
                      "pip install 'latephase[lightning]'") from exc

from latephase.runs import Status
from latephase.tracker import Tracker
from latephase.train.schedule import eval_steps as paper_steps


class CollapseCallback(pl.Callback):
    """Call ``Tracker.evaluate(step)`` at each of ``eval_steps`` optimizer steps.

    ``eval_steps=None``: the paper's schedule (:func:`latephase.eval_steps`) for the
    trainer's ``max_steps`` (which must then be set).  ``splits``: as for the Tracker
    (``name -> (x, y)`` tensors, a DataLoader, or a callable giving batches).  The tracker
    is built at ``on_fit_start`` (``self.tracker``) and closed at the end of fit (status
    ``finished``; ``failed`` or ``interrupted`` when fit raises).
    """

    def __init__(self, splits: Mapping[str, Any], eval_steps: Iterable[int] | None = None, *,
                 run_dir: str | Path | None = None, log: bool = True,
                 **tracker_kwargs: Any) -> None:
        super().__init__()
        self.splits, self.run_dir, self.log = dict(splits), run_dir, log
        self.tracker_kwargs = tracker_kwargs
        self.steps: list[int] | None = None
        if eval_steps is not None:
            steps = sorted({int(s) for s in eval_steps})
            if not steps or steps[0] < 0:
                raise TrackerError(f"eval_steps={list(eval_steps)!r}: expected a non-empty "
                                   "list of steps >= 0 (or None: the paper's schedule)")
            self.steps = steps
        self.tracker: Tracker | None = None
        self._pending: list[int] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        steps = self.steps
        if steps is None:
            if not trainer.max_steps or trainer.max_steps < 1:
                raise TrackerError("CollapseCallback(eval_steps=None) follows the paper's "
                                   "schedule for Trainer(max_steps=N): set max_steps, or pass "
                                   "eval_steps")
            steps = paper_steps(int(trainer.max_steps))
        self.tracker = Tracker(pl_module, self.splits, run_dir=self.run_dir,
                               **self.tracker_kwargs)
        done = trainer.global_step
        self._pending = [s for s in steps if s >= done]
        self._evaluate_due(trainer, done)

    def _evaluate_due(self, trainer: Any, step: int) -> None:
        if self.tracker is None or not self._pending or self._pending[0] > step:
            return
        while self._pending and self._pending[0] <= step:  # steps passed at once: one record
            self._pending.pop(0)
        record = self.tracker.evaluate(step)
        if self.log and trainer.logger is not None:
            trainer.logger.log_metrics(
                {k: float(v) for k, v in record.items() if k != "step"
                 and isinstance(v, int | float) and not isinstance(v, bool)}, step=step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._evaluate_due(trainer, trainer.global_step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.tracker.close(Status.FINISHED)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.tracker is not None:
            self.tracker.close(Status.INTERRUPTED if isinstance(exception, KeyboardInterrupt)
                               else Status.FAILED)
