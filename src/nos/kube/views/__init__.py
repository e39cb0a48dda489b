"""Plain-Kubernetes reading without a client: typed Node/Pod views, quantities, scheduler rules, snapshots.

Nothing here talks to an apiserver: objects come in as dicts (from the
API, a watch cache or a ``kubectl get -o yaml`` file) and leave as frozen dataclasses.
"""
