-- wrk script: a WAMP call through the HTTP caller bridge to the RESTCallee (bench/libs/speed.py)
wrk.method = "POST"
wrk.body = '{"procedure": "com.example.rest", "kwargs": {"method": "GET", "url": "x"}}'
wrk.headers["Content-Type"] = "application/json"
