"""The runtime of nos' processes: one control loop, the manager around it, and its pieces.

``loop`` (the one reconcile-then-wait loop, for the cluster, ``--once`` and the simulator),
``manager`` (what a process owns: caches, leader election, the metrics/health server, signals, the
client, the Event recorder), ``reflector`` (list-watch caches), ``leader`` (the Lease elector),
``events`` (the Event recorder), ``server`` (``/metrics``, ``/healthz``, ``/readyz``).
"""
