"""The Python API: a detector object and three functions, with the command line's settings and defaults.

A session from a notebook (`data` is a dataset folder from `cornernet prepare-data`; here the test suite's
synthetic shapes):

>>> from cornernet_cli import Detector, evaluate, export, train
>>> run = train(data, preset="tiny", iters=2, input_size=64, out="runs/tiny", progress=False)
>>> run.status
'finished'
>>> detector = Detector(run.checkpoint)
>>> found = detector.predict(f"{data}/images/val/000000.jpg", threshold=0.0)
>>> found.boxes.shape[1], found.plot().shape
(4, (128, 128, 3))
>>> metrics = evaluate(run.checkpoint, data, out="runs/tiny/eval/results.json", progress=False)
>>> 0.0 <= metrics.ap <= 1.0
True

Images are numpy arrays in OpenCV's BGR channel order unless a function says otherwise (`rgb=True`).
Boxes are x1, y1, x2, y2 in image pixels (continuous coordinates: a box covering pixel columns 0..9 spans
x 0.0 to 10.0). Errors about a bad argument are `SettingError`s naming the parameter; every other user
error is a one-line `CornerNetError` naming the file and value.
"""

from __future__ import annotations

import sys

from cornernet_cli.api.deploy import export
from cornernet_cli.api.detector import Detections, Detector, ImageInput, as_bgr
from cornernet_cli.api.evaluation import Evaluation, evaluate
from cornernet_cli.api.training import TrainRun, train

__all__ = ["Detections", "Detector", "Evaluation", "ImageInput", "TrainRun", "as_bgr", "evaluate", "export", "train"]

# Importing the submodule cornernet_cli.export (above) set the package's attribute `export` to that module;
# the package's public `export` is this function (the module stays importable: from cornernet_cli.export
# import export_onnx).
sys.modules[__name__.rpartition(".")[0]].export = export
