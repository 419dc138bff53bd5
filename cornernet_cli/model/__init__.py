"""The CornerNet network: corner pooling, stacked hourglass, prediction modules."""

from cornernet_cli.model.corner_pool import CornerPool, corner_pool, corner_pool_doubling
from cornernet_cli.model.cornernet import (
    CentreOutputs,
    CornerNet,
    CornerOutputs,
    build_model,
    outputs_from_heads,
    set_export_mode,
)

__all__ = ["CentreOutputs", "CornerNet", "CornerOutputs", "CornerPool", "build_model", "corner_pool",
           "corner_pool_doubling", "outputs_from_heads", "set_export_mode"]
