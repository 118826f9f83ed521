"""dqe: a distributed data-quality engine for labelled text (the DQE method on Spark + Delta)."""

__version__ = "0.1.0"
