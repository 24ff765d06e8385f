"""A router component: plain Python, its procedures run on a thread pool."""

import time


class Backend:
    def __init__(self, config):
        self.greeting = config.extra.get("greeting", "Hello")

    def on_join(self, session):
        session.register("com.example.add", self.add)
        session.register("com.example.greet", self.greet)
        session.register("com.example.slow", self.slow)

    def add(self, a, b):
        return a + b

    def greet(self, name="world"):
        return f"{self.greeting}, {name}!"

    def slow(self, seconds=1):
        time.sleep(float(seconds))  # blocks a pool thread, never the hub
        return "done"
