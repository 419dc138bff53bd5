"""CornerNet: detecting objects as paired keypoints (Law & Deng, ECCV 2018), on CPU or GPU.

The Python API (cornernet_cli.api; docs/api.md):

    from cornernet_cli import Detector, train, evaluate, export
    run = train("data/mine", time_budget=25)           # `cornernet train`: same settings, same defaults
    found = Detector(run.checkpoint).predict("photo.jpg")  # .boxes [N, 4] x1, y1, x2, y2 px, .scores, .names
    evaluate(run.checkpoint, "data/mine", split="test").ap
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Detections", "Detector", "Evaluation", "TrainRun", "evaluate", "export", "train"]

if TYPE_CHECKING:
    from cornernet_cli.api import Detections, Detector, Evaluation, TrainRun, evaluate, export, train


def __getattr__(name: str) -> Any:
    # The API needs torch and OpenCV (about a second to import); `cornernet --version` and the CLI's
    # start-up, which import this package, must not pay for it.
    if name in __all__:
        from cornernet_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'cornernet_cli' has no attribute {name!r}")
