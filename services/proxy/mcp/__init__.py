"""MCP tool injection: tools of centrally configured MCP servers offered to the model on every request,
run by the bridge when the model calls them (docs/mcp.md).

Modules: ``config`` (the servers file), ``settings`` (``AIBRIDGE_MCP_*``), ``registry`` (the tool cache
and its per-provider renderings), ``connection`` (one SDK session), ``pool`` (``CachedBridgePool``:
shared and per-user sessions), ``client`` (one call → :class:`CallResult`, failures included),
``manager`` (listing at start, on an interval and on ``SIGHUP``) and ``injector`` (the seam).

The seam for the provider adapters is :class:`McpInjector`, built once by the proxy component
(``McpInjector.from_settings``: ``None`` when no servers file is set) and started/stopped with it:

- ``tools_for(ToolFormat.X, headers) -> list | None``: the cached definitions to append to the request's
  ``tools`` (a shared list: concatenate, never mutate); ``None`` when the caller sent
  ``X-Aibridge-Mcp: off`` or no tool is available. ``headers`` are the lower-cased request headers.
- ``is_injected(name)``: the model's call is the bridge's to run (``bmcp_`` prefix).
- ``await call_many([ToolCall(name, arguments)], user_id, headers, context) -> list[CallResult]``: runs
  the calls concurrently, each under its own ``Intercept.ProcessRequest.ToolCall`` span; never raises
  for a failed call: ``CallResult.is_error`` with ``content`` to send back to the model as the tool's
  (error) result, plus ``server``, ``tool``, ``url``, ``duration``, ``error_message`` for recording.
- ``max_rounds``: upstream rounds at most per request.
- ``strip_forward_headers`` / ``is_mcp_header``: the ``X-Aibridge-Mcp*`` headers never go upstream (the
  proxy's header forwarding already drops them).
"""

from aibridge.proxy.mcp.client import CallResult, Outcome
from aibridge.proxy.mcp.config import AuthKind, McpConfigError, McpServerConfig, load_servers, parse_servers
from aibridge.proxy.mcp.injector import McpInjector, ToolCall, is_mcp_header, strip_forward_headers
from aibridge.proxy.mcp.registry import ToolFormat
from aibridge.proxy.mcp.settings import McpSettings

__all__ = [
    "AuthKind",
    "CallResult",
    "McpConfigError",
    "McpInjector",
    "McpServerConfig",
    "McpSettings",
    "Outcome",
    "ToolCall",
    "ToolFormat",
    "is_mcp_header",
    "load_servers",
    "parse_servers",
    "strip_forward_headers",
]
