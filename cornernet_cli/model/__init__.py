"""The CornerNet network: corner pooling, stacked hourglass, prediction modules."""

from cornernet_cli.model.corner_pool import CornerPool, corner_pool, corner_pool_doubling
from cornernet_cli.model.cornernet import (
    CENTRE_NAMES,
    OUTPUT_NAMES,
    CornerNet,
    CornerOutputs,
    build_model,
    set_export_mode,
)

__all__ = ["CENTRE_NAMES", "OUTPUT_NAMES", "CornerNet", "CornerOutputs", "CornerPool", "build_model", "corner_pool",
           "corner_pool_doubling", "set_export_mode"]
