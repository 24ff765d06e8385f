-- wrk script: POST one event to an HTTP publisher bridge
wrk.method = "POST"
wrk.body = '{"topic": "com.example.bench", "args": [1, "two"], "kwargs": {"three": 3}}'
wrk.headers["Content-Type"] = "application/json"
