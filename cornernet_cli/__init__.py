"""CornerNet: detecting objects as paired keypoints (Law & Deng, ECCV 2018), on CPU or GPU."""

__version__ = "0.1.0"
