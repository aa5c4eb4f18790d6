"""The pure-Python core shared by the coordinator and every client (native and browser).

Stdlib only at import time: Pyodide loads these very files.
"""
