"""The worker runtime: one process per model. The launcher checks the entry, estimates whether
the model fits its budget (deploy/backends/fit.py), pins the process to its cores and applies the
memory budget (limits), builds the backend's worker and serves FastChat's worker protocol (app).

May import: deploy.backends, deploy.wire, deploy.registry.
"""
