"""The Dagster UI of `galpipe ui`, served so that only its own pages can drive it. Dagster's webserver
checks neither Host nor Origin and runs GraphQL mutations sent with GET, so any web page open in the
user's browser could delete runs or launch jobs; LocalOriginGuard wraps its ASGI app and refuses that.

`python -m galpipe.ui_guard --port P (--workspace FILE | --module NAME)` does what `dagster dev` does
(one code server, shared with the daemon, which runs schedules, sensors and the run queue as a child
process), except that the webserver runs in this process, behind the guard."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.responses import PlainTextResponse

from galpipe.ui import HOST

logger = logging.getLogger("galpipe.ui_guard")


def only_queries(document: str) -> bool:
    """Whether a GraphQL document parses and every operation in it is a query (no mutation, no subscription)."""
    try:
        definitions = parse(document).definitions
    except GraphQLError:
        return False
    operations = [definition for definition in definitions if isinstance(definition, OperationDefinitionNode)]
    return bool(operations) and all(operation.operation is OperationType.QUERY for operation in operations)


class LocalOriginGuard:
    """ASGI middleware answering 403 to HTTP requests and websockets that another site may have sent:
    a Host other than 127.0.0.1:<port> or localhost:<port> (DNS rebinding), an Origin other than the
    UI's own (a page elsewhere; browsers send Origin with every POST and websocket), or a GraphQL
    GET that is not a plain query (a link or <img> sends a GET without Origin). Its answers forbid
    framing by other sites, which could otherwise steer the user's clicks inside the UI."""

    def __init__(self, app, port: int):
        self.app = app
        self.hosts = {f"{HOST}:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    def refusal(self, scope) -> str | None:
        """Why the request is refused, or None to let it through."""
        headers = Headers(scope=scope)
        hosts = headers.getlist("host")
        if len(hosts) != 1 or hosts[0].lower() not in self.hosts:
            return f"Host {', '.join(hosts) or '(none)'} is not this UI's"
        foreign = [origin for origin in headers.getlist("origin") if origin.lower() not in self.origins]
        if foreign:
            return f"requests from other origins ({foreign[0]}) are refused"
        if scope["type"] == "http" and scope["method"] != "POST" and scope["path"].rstrip("/") == "/graphql":
            # Dagster reads a GET's GraphQL from the query string, exactly as QueryParams parses it.
            if not all(only_queries(query) for query in QueryParams(scope["query_string"]).getlist("query")):
                return "GraphQL mutations must be sent with POST"
        return None

    @staticmethod
    def forbidding_frames(send):
        async def send_with_frame_rule(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Frame-Options"] = "SAMEORIGIN"  # as MLflow's UI answers
            await send(message)
        return send_with_frame_rule

    async def __call__(self, scope, receive, send):
        reason = self.refusal(scope) if scope["type"] in ("http", "websocket") else None
        if reason is None:
            await self.app(scope, receive, self.forbidding_frames(send) if scope["type"] == "http" else send)
            return
        logger.warning("refused %s %s: %s", scope.get("method", "websocket"), scope["path"], reason)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before the handshake: the server answers 403
        else:
            await PlainTextResponse(f"Forbidden: {reason}\n", status_code=403)(scope, receive, send)


def stop_daemon(daemon: subprocess.Popen, grace_s: float = 30.0) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGINT)
    try:
        daemon.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def serve(port: int, workspace_file: str | None, module_name: str | None) -> None:
    """The parts of `dagster dev` (dagster/_cli/dev.py) and of dagster-webserver's CLI that galpipe uses,
    with the webserver's app wrapped in LocalOriginGuard. Dagster is pinned, and the UI tests would
    fail if these internals moved."""
    import uvicorn
    import yaml
    from dagster import DagsterInstance
    from dagster._cli.proxy_server_manager import ProxyServerManager
    from dagster._cli.workspace.cli_target import WorkspaceOpts, workspace_opts_to_load_target
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver import cli as webserver_cli
    from dagster_webserver.app import create_app_from_workspace_process_context
    from dagster_webserver.version import __version__

    instance = DagsterInstance.get()  # from DAGSTER_HOME, which `galpipe ui` sets
    instance.optimize_for_webserver(webserver_cli.DEFAULT_DB_STATEMENT_TIMEOUT, webserver_cli.DEFAULT_POOL_RECYCLE,
                                    webserver_cli.DEFAULT_POOL_MAX_OVERFLOW)
    options = WorkspaceOpts(workspace=[workspace_file]) if workspace_file else WorkspaceOpts(module_name=[module_name])
    with (ProxyServerManager(instance, workspace_opts_to_load_target(options), "warning") as code_servers,
          TemporaryDirectory() as folder):
        # The webserver and the daemon both load the definitions from this one code server.
        shared_workspace = Path(folder) / "workspace.yaml"
        shared_workspace.write_text(yaml.dump({"load_from": code_servers.get_code_server_specs()}))
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run",
                                   "--workspace", str(shared_workspace)])
        try:
            with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(shared_workspace)]),
                                         version=__version__) as context:
                app = create_app_from_workspace_process_context(context)
                print(f"Serving the Dagster UI on http://{HOST}:{port}, refusing requests from other sites",
                      flush=True)
                uvicorn.run(LocalOriginGuard(app, port), host=HOST, port=port, log_level="warning")
        finally:
            stop_daemon(daemon)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m galpipe.ui_guard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workspace", help="a workspace.yaml")
    where.add_argument("--module", help="a Python module holding the Definitions")
    args = parser.parse_args(argv)
    try:
        serve(args.port, args.workspace, args.module)
    except KeyboardInterrupt:  # Ctrl-C while the definitions were still loading
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
