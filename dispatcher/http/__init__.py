"""The HTTP side of the daemon: `server.build_app()` and the route modules it mounts."""
