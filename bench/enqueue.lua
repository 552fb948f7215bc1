-- One job submission per request, as a client sends it (each a new job: no Idempotency-Key).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt": "A fox runs through snow.", "duration_s": 5, "backend": "runway"}'
