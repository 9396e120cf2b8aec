from __future__ import annotations

import httpx

from tests.conftest import Gunicorn


async def test_proxies_get_and_post(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy = await start_proxy(
        f"""
temp_path: "{{temp}}"
access_log: {{format: off}}
upstreams:
  app: {{servers: ["{gunicorn_a.address}"]}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - path: /
        proxy_pass: app
"""
    )
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get("/")
        assert response.status_code == 200
        assert response.text == "hello from a\n"
        response = await client.post("/echo", content=b"x" * 100)
        assert response.json()["body_length"] == 100
