"""TensorBoard event files for a training run: the rows of metrics.jsonl as scalars (torch's SummaryWriter).

Training rows become train/<name> (loss terms, lr, images_per_s, ...) and validation rows val/<metric> at the
row's step. Needs the `tensorboard` package (`pip install tensorboard`, or the `tensorboard` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cornernet_cli.errors import CornerNetError


class Board:
    """A SummaryWriter in `log_dir`. `purge_step`: a resumed run's step, so that TensorBoard drops the events
    the first run logged after it (the resumed run logs those steps again)."""

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CornerNetError("tensorboard event files need the tensorboard package: pip install tensorboard "
                                 "(or the cornernet[tensorboard] extra)") from None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, row: dict[str, Any]) -> None:
        """Log one metrics.jsonl row (a dict with "step", and the numbers or a "val" dict of metrics)."""
        step = int(row["step"])
        values = row.get("val", row)
        prefix = "val" if "val" in row else "train"
        for key, value in values.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["Board"]
