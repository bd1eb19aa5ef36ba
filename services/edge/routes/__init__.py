"""The edge's HTTP and WebSocket routes, one router per concern.

Each router reaches the runtime through `deps.Runtime` (the app's `state.runtime`), so any
one of them can be mounted on a bare FastAPI app in a test; services/edge/app.py assembles
them."""
