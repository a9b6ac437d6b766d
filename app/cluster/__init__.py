"""Cluster: the service on Ray Serve, adapter-affine routing across replicas (optional extra).

`replica.py` is one model replica (our own engine, adapter cache and batcher, so a replica keeps
mixed-adapter batching) that registers the adapters it holds with Ray's multiplexing;
`router.py` is the ingress side without HTTP: it splits a request by adapter, sends each part to
a replica that holds that adapter and joins the answers; `ray_serve.py` builds the Serve
application (`serve run deploy/ray/serve.yaml`). The HTTP routes themselves are the ordinary
ones, mounted by `app.api.factory`. Imports `app.serving`, `app.api.factory`, `app.main` (for
`build_limits`) and `ray`; nothing else in the project imports this package.
"""
