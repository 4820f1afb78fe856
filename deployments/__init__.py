"""Ray Serve deployments: the ingress (media + UI), the batched detector and its model backends."""
