"""The one template environment for emails and pages, and rendering an email from it.

Templates are jinja2; the HTML part of an email is MJML compiled by
mjml-python (MRML). The MRML parser is strict and copies unknown tags
verbatim, so MJML and HTML templates are always autoescaped; plain-text
templates are not, so outside text shows literally there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2
from markupsafe import Markup
from mjml import mjml2html

from newsletter.core.errors import ConfigurationError, RenderError
from newsletter.core.text import XML_INVALID

__all__ = ["make_template_environment", "render_email", "render_template"]


def _drop_xml_invalid(value: object) -> object:
    """Jinja `finalize` hook: remove characters no email part may carry, keeping Markup safe."""
    if isinstance(value, Markup):
        return Markup(XML_INVALID.sub("", str(value)))
    if isinstance(value, str):
        return XML_INVALID.sub("", value)
    return value


def make_template_environment(templates_dir: Path) -> jinja2.Environment:
    """The one jinja2 environment for emails and pages (autoescape for markup, not for text)."""
    if not templates_dir.is_dir():
        raise ConfigurationError(
            f"templates directory {templates_dir} does not exist; "
            "set NEWSLETTER_TEMPLATES_DIR to a templates folder, or unset it for the bundled ones"
        )
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("mjml.j2", "html.j2"),
            disabled_extensions=("txt.j2",),
            # Anything else is escaped too: forgetting to escape is the dangerous mistake.
            default=True,
            default_for_string=True,
        ),
        undefined=jinja2.StrictUndefined,
        finalize=_drop_xml_invalid,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, object]) -> str:
    """One template rendered, with template mistakes as one-line RenderErrors."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as error:
        raise RenderError(f"template {error.name} not found in the templates directory") from None
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(
            f"template {error.filename or name} line {error.lineno}: {error.message}"
        ) from None
    except jinja2.UndefinedError as error:
        raise RenderError(f"template {name} needs a value it was not given: {error}") from None


def render_email(
    env: jinja2.Environment, stem: str, context: Mapping[str, object]
) -> tuple[str, str]:
    """HTML (from `email/{stem}.mjml.j2` via MJML) and text (from `email/{stem}.txt.j2`)."""
    mjml_name = f"email/{stem}.mjml.j2"
    mjml_source = render_template(env, mjml_name, context)
    text = render_template(env, f"email/{stem}.txt.j2", context)
    try:
        # fonts={} keeps Google Fonts links out of the mail: no tracking, fewer bytes.
        html = mjml2html(mjml_source, fonts={}, disable_comments=True)
    except Exception as error:
        raise RenderError(
            f"MJML could not compile {mjml_name}: {error} "
            "(check the template's tags and that every value is escaped)"
        ) from error
    return html, text
