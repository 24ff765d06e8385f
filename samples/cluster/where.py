"""A router component on each node: a shared (round-robin) procedure that says which node
answered, and a counter of the events it saw (from publishers on any node)."""


class Where:
    def __init__(self, config):
        self.node = config.extra["node"]
        self.seen = 0

    def on_join(self, session):
        session.register("com.example.where", self.where, invoke="roundrobin")
        session.subscribe("com.example.news", self.news)

    def where(self):
        return {"node": self.node, "events_seen": self.seen}

    def news(self, *args, **kwargs):
        self.seen += 1
