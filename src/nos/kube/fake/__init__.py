"""The in-memory Kubernetes API: ``MemoryKube`` (the port) over ``ObjectStore`` (apiserver semantics).

Used by unit tests, ``nos simulate`` and ``nos agent --backend simulated``; the tests' HTTP fake API
server is built on the same store and selectors, so the two fakes cannot drift apart.
"""
