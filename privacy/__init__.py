"""Privacy: SecAgg+ secure aggregation (``privacy.secagg``) and differential privacy (``privacy.dp``).

Client-side modules are pure Python (stdlib only at import time) so Pyodide loads them unchanged.
"""
