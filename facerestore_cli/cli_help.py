"""Help pages as plain text that reads at 80 columns: click's two-column layout (the description column never
narrower than the terminal less 34 characters), options grouped under the help panels they declare, no markup
(a help text's brackets, as in `facerestore[ray]`, are words, not styles), no type placeholders."""

from __future__ import annotations

import types

import typer


def plain_help(command) -> None:
    """Give `command` and every command under it the plain, sectioned help (typer's rich boxes squeeze the
    descriptions into narrow strips and read `[...]` in help texts as markup)."""
    command.rich_markup_mode = None
    command.format_options = types.MethodType(_format_sections, command)
    command.format_usage = types.MethodType(_format_usage, command)
    option = command.get_help_option(typer.Context(command))
    if option is not None:
        option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


def _format_sections(self, ctx, formatter) -> None:
    """A command's format_options: its arguments, then its options under their panels' titles, then its
    subcommands."""
    arguments, sections = [], {}
    for param in self.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append((param.metavar or param.name.upper(), getattr(param, "help", None) or ""))
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    for title, rows in sections.items():
        with formatter.section(title):
            formatter.write_dl(rows)
    if hasattr(self, "format_commands"):
        self.format_commands(ctx, formatter)


def _format_usage(self, ctx, formatter) -> None:
    """The usage line with arguments as their metavars: NAME required, [NAME] optional (typer writes {NAME})."""
    pieces = [self.options_metavar] if self.options_metavar else []
    for param in self.get_params(ctx):
        if param.param_type_name == "argument":
            name = param.metavar or param.name.upper()
            name += "..." if param.nargs != 1 and not name.endswith("...") else ""
            pieces.append(name if param.required else f"[{name}]")
    if hasattr(self, "subcommand_metavar"):
        pieces.append(self.subcommand_metavar)
    formatter.write_usage(ctx.command_path, " ".join(pieces))
