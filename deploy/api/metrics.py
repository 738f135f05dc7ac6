"""Prometheus metrics for the API server's `/metrics` (behind the API keys, like every route).

Per model: requests by route and status, latency and time-to-first-token histograms, generated
tokens, the decode rate of the last answer; and, read live from the controller and the workers at
scrape time, worker up/down, queue length, resident memory and budget. The request gate records
each request it lets through (deploy/api/gate.py); one registry per API server app, no globals.
"""
from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from deploy.wire import routes

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


LOAD_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)


class LiveWorkers:
    """A collector of the gauges read at scrape time (set by `FleetMetrics.render` just before):
    workers from the controller and their own /fleet_info, memory pools from the controller."""

    def __init__(self):
        self.workers: list[dict] = []
        self.infos: dict[str, dict] = {}
        self.pools: list[dict] = []

    def pool_families(self):
        """Each host's pool: bytes used and its limit, evictions per model, load times."""
        used = GaugeMetricFamily("fleet_pool_used_bytes", "Memory the host's pool holds for its models now", labels=["host"])
        limit = GaugeMetricFamily("fleet_pool_limit_bytes", "The host's memory_limit", labels=["host"])
        evictions = CounterMetricFamily("fleet_model_evictions", "Times a model was unloaded to make room",
                                        labels=["model"])
        loads = HistogramMetricFamily("fleet_model_load_seconds", "Seconds a model took to load", labels=["host"])
        counts: dict[str, int] = {}
        for p in self.pools:
            used.add_metric([p["host"]], p["used"])
            limit.add_metric([p["host"]], p["limit"])
            for model, n in p["evictions"].items():
                counts[model] = counts.get(model, 0) + n
            times = p["load_seconds"]
            buckets = [(str(b), sum(t <= b for t in times)) for b in LOAD_BUCKETS] + [("+Inf", len(times))]
            loads.add_metric([p["host"]], buckets, sum(times))
        for model, n in counts.items():
            evictions.add_metric([model], n)
        return [used, limit, evictions, loads]

    def collect(self):
        up = GaugeMetricFamily("fleet_worker_up", "1 if the controller routes to the worker, 0 if it stopped answering",
                               labels=["model", "worker"])
        queue = GaugeMetricFamily("fleet_worker_queue_length", "Requests waiting at the worker", labels=["model", "worker"])
        rss = GaugeMetricFamily("fleet_worker_resident_memory_bytes", "The worker's resident memory",
                                labels=["model", "worker"])
        budget = GaugeMetricFamily("fleet_worker_memory_budget_bytes", "The worker's memory budget",
                                   labels=["model", "worker"])
        loaded = GaugeMetricFamily("fleet_model_loaded", "1 if the worker's model is in memory now, 0 if asleep",
                                   labels=["model", "worker"])
        for w in self.workers:
            info = self.infos.get(w["worker"], {})
            for model in w["models"]:
                labels = [model, w["worker"]]
                up.add_metric(labels, 1 if w["healthy"] else 0)
                queue.add_metric(labels, w["queue_length"])
                if info.get("rss"):
                    rss.add_metric(labels, info["rss"])
                if info.get("memory_budget"):
                    budget.add_metric(labels, info["memory_budget"])
                if info.get("state"):
                    loaded.add_metric(labels, 1 if info["state"] == "loaded" else 0)
        return [up, queue, rss, budget, loaded, *self.pool_families()]


class FleetMetrics:
    def __init__(self, controller_url: str):
        self.controller_url = controller_url
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fleet_requests", "API requests by model, route and HTTP status",
                                ["model", "route", "status"], registry=r)
        self.latency = Histogram("fleet_request_duration_seconds", "From request to the last byte of the answer",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("fleet_time_to_first_token_seconds", "From request to the first streamed text",
                              ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Counter("fleet_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.decode = Gauge("fleet_decode_tokens_per_second", "Decode rate of the model's last streamed answer",
                            ["model"], registry=r)
        self.live = LiveWorkers()
        r.register(self.live)

    def record(self, model: str, route: str, status: int, latency: float, ttft: float | None, tokens: int) -> None:
        model = model or "-"
        self.requests.labels(model, route, str(status)).inc()
        if status >= 400:
            return
        self.latency.labels(model).observe(latency)
        if tokens:
            self.tokens.labels(model).inc(tokens)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
            if tokens > 1 and latency > ttft:
                self.decode.labels(model).set((tokens - 1) / (latency - ttft))

    async def render(self) -> bytes:
        """The text exposition, with the live worker gauges read now (2 s timeouts, concurrently)."""
        async with httpx.AsyncClient(timeout=2) as http:
            try:
                workers = (await http.get(self.controller_url + routes.FLEET_WORKERS)).json()["workers"]
                pools = (await http.get(self.controller_url + routes.FLEET_POOLS)).json()["pools"]
            except (httpx.HTTPError, ValueError, KeyError):
                workers, pools = [], []

            async def info(w: dict) -> tuple[str, dict]:
                try:
                    return w["worker"], (await http.get(w["worker"] + routes.FLEET_INFO)).json()
                except (httpx.HTTPError, ValueError):
                    return w["worker"], {}

            infos = dict(await asyncio.gather(*(info(w) for w in workers if w["healthy"])))
        self.live.workers, self.live.infos, self.live.pools = workers, infos, pools
        return generate_latest(self.registry)
