"""Kubernetes for nos: the ``Kube`` port, its lightkube adapter, an in-memory fake and typed views.

* ``port`` — the ``Kube`` protocol every process talks to, ``Obj`` (an object as the API's JSON
  dict), the API errors (``KubeError``, ``NotFound``, ``Conflict``, ``Gone``) and ``Event``;
* ``client`` — the production adapter: lightkube over HTTP, with retries;
* ``events`` — the events.k8s.io/v1 body and client-go's series deduplication both adapters send;
* ``fake`` — the in-memory stand-in with the apiserver's semantics (``MemoryKube`` over an
  ``ObjectStore``, selectors) used by the tests and by ``nos simulate``;
* ``views`` — plain-Kubernetes reading, no client needed: typed Node/Pod views, resource
  quantities, the scheduler rules the planner simulates, and ``kubectl get -o yaml`` snapshots.
"""
