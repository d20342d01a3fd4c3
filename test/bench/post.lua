-- wrk script: POST a callback-sized JSON body, like the worker does
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"type": "otp_link.verified", "timestamp": "2026-01-01T00:00:00+00:00", "data": {"uuid": "a0b5e14e-95da-4bd4-9e2a-071661244bef", "status": "verified", "otp_type": "link", "chat_id": "201553730661@c.us", "verified_chat_id": "201000000001@c.us", "name": "Bench", "reason": null, "created_at": "2026-01-01T00:00:00+00:00", "expires_at": "2026-01-01T00:30:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00", "metadata": null, "sender": "201000000001@c.us"}}'
