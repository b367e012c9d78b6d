"""The viewer commands: `evals view` (serve the local web app) and `evals annotations export`.

Thin: parse, build the app (harness.viewer) or call harness.annotations, print, exit. The web
stack (starlette, uvicorn, jinja2) is imported only when `evals view` runs.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import webbrowser
from pathlib import Path

import typer
from rich.console import Console

from harness.errors import ConfigError, HarnessError

err = Console(stderr=True, highlight=False)

STORE_OPTION = typer.Option(
    None, "--store", help="Run store file (default .evals/evals.db, or $EVALS_HOME/evals.db)."
)
annotations_app = typer.Typer(help="Human annotations of results.", no_args_is_help=True)


def _fail(exc: HarnessError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _store_path(store: Path | None) -> Path:
    from harness.store import default_store_path

    return store if store is not None else default_store_path()


def has_display() -> bool:
    """Can a browser window open here? (Linux and BSDs need an X or Wayland display.)"""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port"
        ) from None
    return sock


def _machine_names() -> list[str]:
    """This machine's host name and its addresses: what others reach a wildcard bind by."""
    name = socket.gethostname()
    try:
        _, aliases, addresses = socket.gethostbyname_ex(name)
    except OSError:
        aliases, addresses = [], []
    return list(dict.fromkeys([name, *aliases, *addresses]))


def view(
    store: Path | None = STORE_OPTION,
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to bind. Anything but "
        "loopback needs the printed token (or --unsafe-no-auth).",
    ),
    no_open: bool = typer.Option(False, "--no-open", help="Do not open a browser."),
    unsafe_no_auth: bool = typer.Option(
        False,
        "--unsafe-no-auth",
        help="Serve a non-loopback "
        "address without a token: anyone who reaches it can "
        "read every run and write annotations.",
    ),
    author: str | None = typer.Option(
        None,
        "--author",
        help="Name stored with annotations (default: git config user.name, else $USER).",
    ),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="Another host name the viewer answers to (e.g. this machine's DNS name).",
    ),
) -> None:
    """Open the local trace viewer: runs, failing cases, traces, comparisons, annotations."""
    from harness import annotations
    from harness.viewer import ViewerConfig, create_app
    from harness.viewer.security import host_name, is_loopback, is_wildcard

    path = _store_path(store)
    token = None
    if not is_loopback(host) and not unsafe_no_auth:
        token = secrets.token_urlsafe(24)
    hosts = list(allow_host)
    if is_wildcard(host):
        hosts += _machine_names()
    try:
        sock = _bind(host, port)
        bound_port = int(sock.getsockname()[1])
        config = ViewerConfig(
            store_path=path,
            host=host,
            port=bound_port,
            token=token,
            unsafe_no_auth=unsafe_no_auth,
            author=author or annotations.default_author(),
            allowed_hosts=tuple(hosts),
        )
        app = create_app(config)
    except HarnessError as exc:
        raise _fail(exc) from None
    shown = "127.0.0.1" if is_wildcard(host) else host_name(host)
    url = f"http://{shown}:{bound_port}/" + (f"?token={token}" if token else "")
    print(f"evals view: {url}", flush=True)
    err.print(f"store {path} · annotating as {config.author} · Ctrl-C to stop")
    if is_wildcard(host):
        err.print(f"answers to: localhost, {', '.join(hosts)} (add names with --allow-host)")
    if token:
        err.print(
            "non-loopback address: the URL above carries the access token; share it only "
            "with people who may read every run in this store"
        )
    elif not is_loopback(host):
        err.print(
            "[yellow]warning:[/yellow] --unsafe-no-auth: anyone who can reach "
            f"{host}:{bound_port} can read this store and write annotations",
            markup=True,
        )
    if not no_open and has_display():
        threading.Timer(0.3, webbrowser.open, (url,)).start()
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@annotations_app.command("export")
def export(
    run_ref: str = typer.Option(..., "--run", help="Run id, id prefix, or 'last'."),
    output: Path = typer.Option(..., "--output", "-o", help="labels.csv or labels.jsonl"),
    tag: str | None = typer.Option(None, "--tag", help="Only results tagged this."),
    include_unlabelled: bool = typer.Option(
        False,
        "--include-unlabelled",
        help="Also results "
        "with tags or a note but no label (label empty; "
        "`evals judge calibrate` refuses those).",
    ),
    store: Path | None = STORE_OPTION,
) -> None:
    """Write a run's annotations as labels for `evals judge calibrate --labels` or a dataset."""
    from harness.annotations import export_labels
    from harness.store import Store

    try:
        with Store.open(_store_path(store), create=False) as db:
            run_id, count = export_labels(
                db, run_ref, output, tag=tag, include_unlabelled=include_unlabelled
            )
    except HarnessError as exc:
        raise _fail(exc) from None
    err.print(f"wrote {count} label(s) of run {run_id} to {output}")


def register(app: typer.Typer) -> None:
    """Add `view` and `annotations` to the `evals` app."""
    app.command("view")(view)
    app.add_typer(annotations_app, name="annotations")
