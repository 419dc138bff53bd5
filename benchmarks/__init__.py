"""Timing scripts that compare the package's fast paths with plain versions of the same algorithm, side by
side in one process. Not part of the installed package; run from the repository root, e.g.
`python -m benchmarks.decode_speed`."""
