"""The Kubernetes executor: one ``batch/v1`` Job per attempt (see ``executor``).

``manifests`` builds the objects (pure), ``bundles`` packs the pipeline folder, ``watches``
follows Jobs and Pods of a namespace, ``logs`` follows one pod's log, ``reasons`` turns their
status into an ``AttemptResult``, ``metrics`` reads ``metrics.k8s.io`` when the cluster has it.
"""
