"""The Kubernetes operator: ``Pipeline`` and ``PipelineRun`` custom resources -> the store and the engine.

``resources`` (the CR shapes), ``crds`` (CRDs generated from them), ``convert`` (CR <-> spec,
run -> status), ``leader`` (one acting replica, by a Lease), ``handlers`` (thin kopf handlers)
and ``runner`` (start it alone or beside the server).
"""
