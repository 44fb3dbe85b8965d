"""The `flux-klein-mcp` command: the MCP server (default), and the same pipeline from a terminal.

    flux-klein-mcp [serve]                      stdio MCP server
    flux-klein-mcp generate PROMPT [options]    one call, JSON summary on stdout
    flux-klein-mcp edit PROMPT --image X
    flux-klein-mcp compose PROMPT --image A --image B ...
    flux-klein-mcp demo [PROMPT]                drive the real server over stdio, like an MCP client would
    flux-klein-mcp doctor [--json]              which keys are set and valid, where files go, which provider
    flux-klein-mcp spend [--json] [--days N] [--by day|provider|model|person] [--user SUBJECT]
                                                what has been spent, from the ledger (everyone's, or one person's)

Exit codes (docs/cli.md): 0 done; 1 the provider, the disk or the output failed (a paid call whose result could
not be printed keeps its images, sidecars and ledger lines); 2 bad arguments or configuration, no consent for the
high tier, or nowhere to print the result (nothing was done); 3 out of credits or a budget reached (stop);
130 interrupted (Ctrl-C); 143 stopped by SIGTERM (nothing the call made was kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..errors import FluxKleinError
from ..rules import ASPECT_RATIOS, OUTPUT_FORMATS, PROVIDER_NAMES
from ..words import closest
from .output import BROKEN_PIPE, PROGRAM, OutputFailed, err, fail, failed, out, out_json, silence_stdout


def build_parser() -> _Parser:
    parser = _Parser(
        prog=PROGRAM,
        description="Generate, edit and compose images with FLUX.2 [klein] 4B. With no command, runs the stdio "
        "MCP server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = parser.command(sub, "serve", help="run the MCP server on stdio (the default), or over HTTP",
                           description="Run the MCP server. With no option it talks JSON-RPC on stdin/stdout, as "
                           "MCP clients start it. --http serves streamable HTTP on /mcp (stateless) instead: "
                           "127.0.0.1 by default; any other address needs FLUX_KLEIN_HTTP_TOKEN.")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp (stateless) instead")
    serve.add_argument("--host", help="address to bind with --http (default 127.0.0.1; any other needs "
                       "FLUX_KLEIN_HTTP_TOKEN)")
    serve.add_argument("--port", type=whole_number(1, 65535), help="port with --http, 1-65535 (default 8000)")
    for name, what in (
        ("generate", "generate 1-4 images from a prompt"),
        ("edit", "edit one image (--image)"),
        ("compose", "compose a new image from 2-4 references (--image, repeated)"),
    ):
        cmd = parser.command(sub, name, help=what, description=what)
        cmd.add_argument("prompt", help="the change to make, and what to keep" if name == "edit"
                         else "what the image should show (in quotes)")
        if name != "generate":
            cmd.add_argument("--image", action="append", required=True, metavar="PATH_OR_URL",
                             help="input image: path, file:// URI, https:// URL or data URL" +
                             (" (repeat 2-4 times)" if name == "compose" else ""))
        cmd.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, help={
            "generate": "image shape (default: 1:1, 1024x1024)",
            "edit": "image shape (default: the input image's, nearest supported ratio)",
            "compose": "image shape (default: the model's choice, usually 1:1)",
        }[name])
        if name == "generate":
            cmd.add_argument("-n", type=int, default=1, help="number of variations, 1-4 (default 1)")
        cmd.add_argument("--seed", type=int, help="fix the result (same seed, same image)")
        cmd.add_argument("--tier", choices=("low", "high"), default="low", type=str.lower,
                         help="low (default, all drafts) or high (explicitly requested finals only; asks you to "
                         "approve the spend unless --yes or FLUX_KLEIN_HIGH_TIER=allow)")
        cmd.add_argument("--yes", action="store_true", help="approve a high-tier spend without being asked")
        cmd.add_argument("--filename", help="name for the saved file (made safe; never overwrites)")
        cmd.add_argument("--provider", choices=PROVIDER_NAMES, type=str.lower, help="provider for this call")
        cmd.add_argument("--output-format", choices=OUTPUT_FORMATS, default="png", type=_format_name,
                         help="file format: png (default, lossless) or jpeg/webp (files several times smaller, a "
                         "faster call; offered by empiriolabs, openai-compatible and the sandbox)")
        cmd.add_argument("--output-dir", type=Path, help="folder for the images (default: FLUX_KLEIN_OUTPUT_DIR "
                         "or ./output)")
    demo = parser.command(sub, "demo", help="start the server on stdio and call generate_image through a real "
                          "MCP client (the sandbox when no key is set)",
                          description="Start the server as an MCP client would (a subprocess on stdio), list its "
                          "tools and call generate_image through the official MCP client, printing what the model "
                          "would receive. Uses your provider key when one is set, the free offline sandbox "
                          "otherwise.")
    demo.add_argument("prompt", nargs="?", default="A lighthouse on a rocky coast at dusk, warm light in the "
                      "window, watercolour style", help="what to draw (default: a lighthouse at dusk)")
    demo.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, default="3:2", help="image shape (default 3:2)")
    doctor = parser.command(sub, "doctor", help="check each provider's key (no spend), the output folder, and "
                            "which provider a call would use; exits 1 when nothing usable is configured",
                            description="Check, without spending anything, each provider's key (OpenRouter GET "
                            "/key with its remaining credit, the gateways GET /models), the output folder, and "
                            "which provider a call would use. Tells a key that is not set, one that is rejected "
                            "and a provider that cannot be reached apart. Exits 1 when calls would not work.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    skill = parser.command(sub, "skill", help="the Agent Skill this package carries (SKILL.md and references/)",
                           description="The Agent Skill teaches an agent when and how to use these tools, and the "
                           "command line when the server is not connected.")
    skill_sub = skill.add_subparsers(dest="skill_command", metavar="ACTION", required=True)
    install = parser.command(skill_sub, "install", key="skill install",
                             help="write the skill to DIR/generate-image-low-flux/",
                             description="Write the skill to DIR/generate-image-low-flux/ (default: Claude Code's "
                             "personal skills folder, ~/.claude/skills). A copy this command installed is updated; "
                             "a folder holding anything else (your own changes, a copy made by hand) is left alone "
                             "unless you pass --force.")
    install.add_argument("--dir", type=Path, help="the skills folder to write into (default: ~/.claude/skills)")
    install.add_argument("--force", action="store_true", help="replace the skill's folder even if it holds files "
                         "this command did not write (they are deleted)")
    spend = parser.command(sub, "spend", help="what has been spent, from the ledger: today, this month, per day, by "
                           "provider and model (no network)")
    spend.add_argument("--json", action="store_true", help="print the report as JSON")
    spend.add_argument("--days", type=whole_number(1, 366), default=7, metavar="N",
                       help="how many recent days to list (1-366, default 7)")
    spend.add_argument("--by", choices=("day", "provider", "model", "person"),
                       help="group the last N days by day, provider, model or signed-in person (with --json: 'rows')")
    spend.add_argument("--user", metavar="SUBJECT", help="only this signed-in person's spend: their subject (`sub`) "
                       "as the authorization server names them, or the `issuer#subject` that --by person lists")
    return parser


#: The commands whose whole point is what they print: refused before doing anything when stdout is closed.
_PRINTING = ("generate", "edit", "compose", "demo", "doctor", "spend", "skill")


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    """The command's exit code; a failure to write the output becomes one sentence and exit code 1."""
    try:
        args = build_parser().parse_args(argv)
    except OSError as exc:  # argparse printing --help or --version into a closed pipe or a full disk
        silence_stdout()
        return fail(f"could not write the output: {BROKEN_PIPE if isinstance(exc, BrokenPipeError) else exc}.", 1)
    try:
        return _dispatch(args)
    except OutputFailed as exc:
        return fail(f"could not write the output: {exc}.", 1)
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command or "serve"
    if command in _PRINTING and sys.stdout is None:
        return fail("standard output is closed, so the result would be printed nowhere; nothing was done. Run it "
                    "with stdout open (redirect it to a file to keep it).", 2)
    # Everything past the parser is imported here, for the command that runs: --help loads none of it.
    import anyio

    if command == "serve":
        from . import serving

        host, port = getattr(args, "host", None), getattr(args, "port", None)
        if getattr(args, "http", False):
            return serving.serve_http(host or "127.0.0.1", port or 8000)
        if host or port:
            build_parser().commands["serve"].error("--host and --port only apply with --http")
        return serving.serve()
    if command == "skill":
        return _install_skill(args.dir, args.force)
    if command == "doctor":
        from ..doctor import run_doctor

        return _report_errors(lambda: anyio.run(run_doctor, args.json, out, out_json))
    if command == "demo":
        from ..demo import run_demo

        return int(anyio.run(run_demo, args.prompt, args.aspect_ratio, out, err))
    from . import commands

    if command == "spend":
        return _report_errors(lambda: commands.spend(args.json, args.days, args.by, args.user))
    return int(anyio.run(commands.one_call, args))


def _install_skill(parent: Path | None, force: bool) -> int:
    from .. import skill

    try:
        folder, files, replaced = skill.install(parent, force=force)
    except skill.NotOurs as exc:
        forcing = ", or pass --force to replace it (what it holds is deleted)" if exc.forcible else ""
        return fail(f"{exc}; nothing was written. Move it away or choose another --dir{forcing}.", 2)
    except FluxKleinError as exc:
        return failed(exc)
    except OSError as exc:
        return fail(f"could not write the skill ({exc.strerror or exc}). Choose another --dir.", 1)
    out(f"{'Updated' if replaced else 'Installed'} the Agent Skill {skill.NAME} in {folder} "
        f"({', '.join(files)}).")
    out("Claude Code loads it in its next session; other agents: point them at that folder.")
    return 0


def _report_errors(command: Callable[[], int]) -> int:
    """Run a command; a `FluxKleinError` becomes its message on stderr and its exit code."""
    try:
        return command()
    except FluxKleinError as exc:
        return failed(exc)


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (a port of 70000 is refused here, not by a crash)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


def _format_name(text: str) -> str:
    """A format as a person types it: any case, and jpg for jpeg."""
    name = text.strip().lower()
    return "jpeg" if name == "jpg" else name


def _nearest_ratio(value: str) -> str | None:
    """For a mistyped aspect ratio such as 16x9 or 16:10, the supported one nearest to it."""
    from ..rules import nearest_aspect_ratio

    parts = value.replace("x", ":").replace("/", ":").split(":")
    if len(parts) == 2 and all(part.strip().isascii() and part.strip().isdigit() and int(part) > 0 for part in parts):
        return nearest_aspect_ratio(int(parts[0]), int(parts[1]))
    return None


class _Parser(argparse.ArgumentParser):
    """argparse, speaking to a person: a mistyped command, choice or flag gets "did you mean ...", and no error
    message repeats a secret or a control character (they go through `output`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: list[str] = []  # this parser's options, for suggestions
        #: Each command's parser by name ("generate", "skill install"), on the top-level parser.
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def command(self, sub: Any, name: str, key: str | None = None, **kwargs: Any) -> _Parser:
        parser: _Parser = sub.add_parser(name, **kwargs)
        self.commands[key or name] = parser
        return parser

    def add_argument(self, *names: Any, **kwargs: Any) -> Any:
        self.flags += [name for name in names if isinstance(name, str) and name.startswith("-")]
        return super().add_argument(*names, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            key = " ".join(filter(None, (getattr(parsed, "command", None), getattr(parsed, "skill_command", None))))
            self.commands.get(key, self).unrecognized(extras)
        return parsed

    def unrecognized(self, extras: list[str]) -> NoReturn:
        flag = next((e.split("=", 1)[0] for e in extras if e.startswith("-")), None)
        guess = closest(flag, self.flags) if flag else None
        hint = (f" (did you mean {guess}?)" if guess else "") if flag else (
            "; a prompt of several words goes in quotes" if any(a.dest == "prompt" for a in self._actions) else "")
        self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")

    # argparse's one check of a value against `choices` (subcommands included); named in every Python since 3.2.
    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is None or value in action.choices:
            return
        choices = [str(choice) for choice in action.choices]
        guess = _nearest_ratio(str(value)) if action.dest == "aspect_ratio" else closest(str(value), choices)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        if action.dest == "command" and " " in str(value).strip():  # a prompt with no command before it
            hint = f" (to make an image: {PROGRAM} generate {str(value)!r})"
        raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint}; choose from {', '.join(choices)}")

    def error(self, message: str) -> NoReturn:
        """One sentence, pointing at the command's --help (the usage block would bury it)."""
        where = self.prog.removeprefix(PROGRAM).strip()
        sys.exit(fail(f"{where + ': ' if where else ''}{message} (see `{self.prog} --help`)", 2))

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            err(message.rstrip())
        try:  # --help and --version printed into a pipe that was closed: one sentence, not a traceback at exit
            if sys.stdout is not None:
                sys.stdout.flush()
        except OSError:
            silence_stdout()
            sys.exit(fail(f"could not write the output: {BROKEN_PIPE}.", 1))
        sys.exit(status)
