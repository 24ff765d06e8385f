"""Workers beside the routers (docs/workers.md): container workers (autobahn components in a
child process), guest workers (any program), and a router worker's autobahn
``ApplicationSession`` components (a child joined over a private channel).

- ``process``: one supervised child (spawn, output into the log, restart with backoff, stop)
- ``manager``: the node's set of them, controller ``options.shutdown``
- ``guest``, ``container``: a worker's config → what to run
- ``runner``: the child that runs autobahn components (Twisted or asyncio)
- ``channel``: the node's end of the private channel to a router's components
- ``kinds``, ``routercomp``: what a component class is; ``probe``, ``check``: ``geonode check``
"""
