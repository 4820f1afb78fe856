"""`serve run serve_app:app [key=value ...]` builds the application from `AppArgs`;
`default_app` is the same application bound with defaults, for `serve build`."""

# No `from __future__ import annotations` here: Serve reads the builder's parameter
# annotation at run time to validate `key=value` args into `AppArgs`.
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from deployments.detector import Detector
from deployments.ingress import Ingress
from serve_app.args import AppArgs

__all__ = ["AppArgs", "app", "default_app"]

# Experimental in Ray 2.60: hashes the `x-session-id` header (a fresh id per request
# when absent) onto a ring of replicas. No fallback replicas: a session's request
# must reach its owner or queue there, never land on a replica without its state.
CONSISTENT_HASH_ROUTER = "ray.serve.experimental.consistent_hash_router:ConsistentHashRouter"


def ingress_router_config(args: AppArgs) -> RequestRouterConfig | None:
    if args.ingress_router != "consistent_hash":
        return None
    return RequestRouterConfig(
        request_router_class=CONSISTENT_HASH_ROUTER,
        request_router_kwargs={"num_fallback_replicas": 0},
    )


def app(args: AppArgs) -> Application:
    """Application builder: Serve validates `key=value` CLI args into `AppArgs`."""
    detector = Detector.options(
        autoscaling_config=args.detector_autoscaling(),
        # A batch can never exceed the replica's ongoing requests: leave room for two.
        max_ongoing_requests=max(2 * args.max_batch_size, int(args.detector_target_ongoing_requests) + 1),
        # Batch settings travel as user_config: a deploy changing only them retunes the
        # running replicas (Detector.reconfigure) instead of replacing them.
        user_config=args.detector_batch_config().user_config(),
        # One access-log line per frame is not worth its cost (2-3 % of a busy detector
        # replica, py-spy); errors are still logged, and metrics count every batch.
        logging_config={"enable_access_log": False},
        ray_actor_options={
            "num_cpus": args.detector_num_cpus,
            "num_gpus": args.detector_num_gpus,
            "resources": dict(args.detector_resources),
        },
    ).bind(args.model_spec(), args.detector_priority)
    routing = {}
    router = ingress_router_config(args)
    if router is not None:
        routing["request_router_config"] = router
    ingress_actor_options = {"num_cpus": args.ingress_num_cpus}
    if args.ingress_resources:
        # Pins ingress replicas to nodes whose UDP media ports are reachable.
        ingress_actor_options["resources"] = dict(args.ingress_resources)
    return Ingress.options(
        num_replicas=args.ingress_replicas,
        # Each browser holds SSE/long-poll requests open: the default of 5 would hang page loads.
        max_ongoing_requests=args.ingress_max_ongoing_requests,
        ray_actor_options=ingress_actor_options,
        **routing,
    ).bind(args.ingress_settings(), detector)


default_app = app(AppArgs())
