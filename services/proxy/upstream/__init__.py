"""The upstream client: one seam, the builtin HTTP/1.1 client and the aiohttp/httpx ones."""
