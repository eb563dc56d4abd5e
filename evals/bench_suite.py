# temporary: removed when naila_graph CLI switches to evals.bench.suite
from evals.bench.suite import add_arguments, run_from_args

__all__ = ["add_arguments", "run_from_args"]
