"""Node checks: one probe per node port (tcp, rest, broker) and a runner with kubelet semantics.

``outcome.py`` holds what every probe returns; ``tcp.py``, ``rest.py`` and ``broker.py`` are the
probes (none imports another); ``runner.py`` builds them, schedules them and keeps their verdicts.
"""
