"""The paysaga console: a web app that shows the choreography as it happens.

It talks to the services only through their public and admin gRPC APIs, through the
`paysaga` command's client layer (services/cli: address lists, TLS, token), so it works
with N replicas, with auth and with TLS. It may import services.cli and services.common,
never services.order or services.payment.

    serve      the process: settings, the start-up policy, uvicorn
    app        the ASGI app: routes, static files, the session guard, security headers
    pages/     one module per page, each with its live stream (server-sent events)
    hub        the background watchers: WatchOrders and every replica's status
    flow       the live flow's counts per lane and outcome over the last minute
    gateway    the calls to the services
    guard      sessions, login, CSRF and origin checks
    web, present, sse, settings   what the pages share
"""
