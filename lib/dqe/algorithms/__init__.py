"""Plain numpy/torch/FAISS algorithms: no Spark, no I/O; unit-testable and usable in notebooks."""
