"""The worker runtime: one process per model. The launcher checks the entry, estimates whether
the model fits its budget (fit), pins the process to its cores and applies the memory budget
(limits), builds the backend's worker and serves FastChat's worker protocol (app).

May import: deploy.registry, deploy.backends, deploy.fleet_client (route names), deploy.bounded_body, deploy.access,
deploy.api.errors and deploy.api.validate (the same strict request checks as the API gate).
"""
