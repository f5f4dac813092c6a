"""Public sharing and badges (PRODUCT.md, Dashboard backend API): share links that show one app's
analytics without sign-in, and README badges of an app's monthly counts, rendered as shields.io
endpoint JSON or as our own SVG."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from xml.sax.saxutils import escape

from tkcloud_domain.errors import NotFound, ValidationFailed

SHARE_LINK_PREFIX = "shr_"
# A slug is the whole secret of a share link: at least 128 random bits, URL-safe base64
# (22 characters carry 132 bits).
SHARE_SLUG_MIN_LENGTH = 22
_URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def is_valid_slug(slug: str) -> bool:
    """Long enough to be unguessable and made of URL-safe characters only."""
    return len(slug) >= SHARE_SLUG_MIN_LENGTH and _URLSAFE.fullmatch(slug) is not None


@dataclass(frozen=True, slots=True)
class ShareLink:
    """A read-only public view of one app's analytics, reached by its slug."""

    id: str
    org_id: str
    app_id: str
    slug: str
    created_by: str | None  # a user id; None when an operator or an API key made it
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    # The owner opted in to show raw events (the explorer) as well as the aggregates.
    include_events: bool = False

    def is_live(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


# --- badges -------------------------------------------------------------------------------------


class BadgeMetric(StrEnum):
    EVENTS_PER_MONTH = "events-per-month"
    USERS_PER_MONTH = "users-per-month"

    @classmethod
    def parse(cls, text: str) -> BadgeMetric:
        """The metric named in a URL; an unknown one is a missing badge (NotFound)."""
        try:
            return cls(text)
        except ValueError:
            raise NotFound(f"No badge metric {text!r}") from None

    @property
    def label(self) -> str:
        return "events" if self is BadgeMetric.EVENTS_PER_MONTH else "users"


class BadgeStyle(StrEnum):
    FLAT = "flat"
    FLAT_SQUARE = "flat-square"
    FOR_THE_BADGE = "for-the-badge"

    @classmethod
    def parse(cls, text: str | None) -> BadgeStyle:
        if text is None or text == "":
            return cls.FLAT
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(style.value for style in cls)
            raise ValidationFailed(
                f"style: expected one of {allowed}", details={"field": "style"}
            ) from None


_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k"))


def human_count(n: int) -> str:
    """999, 1.2k, 12k, 1.2M, 3.4B: one decimal below ten units, none at or above, never a
    trailing ".0". Truncated rather than rounded, so a badge never claims more than was counted
    (1,999 is "1.9k"; 999,999 is "999k")."""
    if n < 0:
        raise ValueError(f"a count is never negative: {n}")
    for size, unit in _UNITS:
        if n >= size:
            tenths = n * 10 // size
            if tenths < 100:
                whole, tenth = divmod(tenths, 10)
                return f"{whole}.{tenth}{unit}" if tenth else f"{whole}{unit}"
            return f"{n // size}{unit}"
    return str(n)


def badge_message(count: int) -> str:
    """The badge's right-hand text for a monthly count: "1.2M/mo"."""
    return f"{human_count(count)}/mo"


def badge_color(count: int) -> str:
    """Blue for a living app, light grey for one with nothing this month yet."""
    return "blue" if count > 0 else "lightgrey"


# shields.io's named colours (the endpoint JSON names them; the SVG needs the hex value).
NAMED_COLORS = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellowgreen": "#a4a61d",
    "yellow": "#dfb317",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "blue": "#007ec6",
    "grey": "#555",
    "gray": "#555",
    "lightgrey": "#9f9f9f",
    "lightgray": "#9f9f9f",
    "success": "#4c1",
    "important": "#fe7d37",
    "critical": "#e05d44",
    "informational": "#007ec6",
    "inactive": "#9f9f9f",
}
_HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
LABEL_COLOR = "#555"


def color_hex(color: str) -> str:
    """A named or hex colour as `#rrggbb`/`#rgb`; anything else is refused, since the value ends
    up inside an SVG attribute."""
    named = NAMED_COLORS.get(color.lower())
    if named is not None:
        return named
    match = _HEX_COLOR.fullmatch(color)
    if match is None:
        raise ValueError(f"not a colour: {color!r}")
    return "#" + match.group(1).lower()


# Advance widths of Verdana at 11px, in pixels (its metrics at 2048 units per em, rounded to a
# tenth): enough to size a badge as shields.io does without a font file. Characters not listed
# take the width of a digit, or of a wide glyph for East Asian scripts.
_VERDANA_11 = {
    " ": 3.9, "!": 4.3, '"': 5.0, "#": 9.0, "$": 7.0, "%": 11.9, "&": 8.0, "'": 3.0,
    "(": 5.0, ")": 5.0, "*": 7.0, "+": 9.0, ",": 4.0, "-": 5.0, ".": 4.0, "/": 5.0,
    "0": 7.0, "1": 7.0, "2": 7.0, "3": 7.0, "4": 7.0, "5": 7.0, "6": 7.0, "7": 7.0,
    "8": 7.0, "9": 7.0, ":": 5.0, ";": 5.0, "<": 9.0, "=": 9.0, ">": 9.0, "?": 6.0,
    "@": 11.0, "A": 7.5, "B": 7.6, "C": 7.7, "D": 8.5, "E": 7.0, "F": 6.3, "G": 8.5,
    "H": 8.3, "I": 4.6, "J": 5.0, "K": 7.6, "L": 6.2, "M": 9.4, "N": 8.2, "O": 8.7,
    "P": 6.6, "Q": 8.7, "R": 7.7, "S": 7.5, "T": 6.8, "U": 8.1, "V": 7.5, "W": 10.9,
    "X": 7.5, "Y": 6.8, "Z": 7.5, "[": 5.0, "\\": 5.0, "]": 5.0, "^": 9.0, "_": 7.0,
    "`": 7.0, "a": 6.6, "b": 6.8, "c": 5.8, "d": 6.8, "e": 6.6, "f": 3.8, "g": 6.8,
    "h": 6.9, "i": 3.0, "j": 3.8, "k": 6.5, "l": 3.0, "m": 10.7, "n": 6.9, "o": 6.7,
    "p": 6.8, "q": 6.8, "r": 4.7, "s": 5.7, "t": 4.3, "u": 6.9, "v": 6.5, "w": 8.9,
    "x": 6.5, "y": 6.5, "z": 5.8, "{": 7.0, "|": 5.0, "}": 7.0, "~": 9.0,
}  # fmt: skip
_DEFAULT_WIDTH = 7.0
_WIDE_WIDTH = 11.0
_BOLD_FACTOR = 1.1  # Verdana Bold is about a tenth wider than the regular weight


def text_width(text: str, *, size: float = 11.0, bold: bool = False, spacing: float = 0.0) -> float:
    """The estimated width in pixels of `text` in Verdana at `size` px."""
    width = 0.0
    for char in text:
        known = _VERDANA_11.get(char)
        if known is None:
            known = _WIDE_WIDTH if ord(char) >= 0x1100 else _DEFAULT_WIDTH
        width += known
    width *= size / 11.0
    if bold:
        width *= _BOLD_FACTOR
    return width + spacing * len(text)


@dataclass(frozen=True, slots=True)
class _Geometry:
    height: int
    font_size: float  # px
    padding: float  # px either side of each text
    bold: bool
    spacing: float  # letter-spacing, px
    uppercase: bool
    radius: int
    gradient: bool


_STYLES = {
    BadgeStyle.FLAT: _Geometry(20, 11.0, 6.0, False, 0.0, False, 3, True),
    BadgeStyle.FLAT_SQUARE: _Geometry(20, 11.0, 6.0, False, 0.0, False, 0, False),
    BadgeStyle.FOR_THE_BADGE: _Geometry(28, 10.0, 9.0, True, 1.25, True, 0, False),
}
_FONT = "Verdana,Geneva,DejaVu Sans,sans-serif"


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;", "'": "&apos;"})


def render_badge_svg(
    label: str, message: str, color: str, style: BadgeStyle = BadgeStyle.FLAT
) -> str:
    """A self-contained SVG badge in shields.io's look: a grey label and a coloured message,
    with the whole text as aria-label and title. Raises ValueError for an unknown colour."""
    g = _STYLES[BadgeStyle(style)]
    fill = color_hex(color)
    if g.uppercase:
        label, message = label.upper(), message.upper()
    spoken = f"{label}: {message}" if label else message

    def measure(text: str) -> float:
        return text_width(text, size=g.font_size, bold=g.bold, spacing=g.spacing)

    label_text, message_text = measure(label), measure(message)
    label_width = round(label_text + 2 * g.padding) if label else 0
    message_width = round(message_text + 2 * g.padding)
    width = label_width + message_width
    h = g.height

    # Text is drawn at ten times the size and scaled down, as shields.io does, for sharper
    # sub-pixel placement; textLength pins the estimate so every renderer agrees on the width.
    baseline = round((h / 2 + g.font_size * 0.36) * 10)
    weight = ' font-weight="bold"' if g.bold else ""
    spacing = f' letter-spacing="{g.spacing * 10:g}"' if g.spacing else ""

    def text(content: str, centre: float, length: float) -> str:
        x, length10 = round(centre * 10), round(length * 10)
        shadow = ""
        if g.gradient:
            shadow = (
                f'<text aria-hidden="true" x="{x}" y="{baseline + 10}" fill="#010101" '
                f'fill-opacity=".3" transform="scale(.1)" textLength="{length10}">'
                f"{_attr(content)}</text>"
            )
        return (
            f'{shadow}<text x="{x}" y="{baseline}" transform="scale(.1)" fill="#fff" '
            f'textLength="{length10}">{_attr(content)}</text>'
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
        f'aria-label="{_attr(spoken)}">',
        f"<title>{_attr(spoken)}</title>",
    ]
    if g.gradient:
        parts.append(
            '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
            'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        )
    parts.append(
        f'<clipPath id="r"><rect width="{width}" height="{h}" rx="{g.radius}" fill="#fff"/>'
        "</clipPath>"
    )
    rendering = "" if g.radius else ' shape-rendering="crispEdges"'
    parts.append(f'<g clip-path="url(#r)"{rendering}>')
    if label:
        parts.append(f'<rect width="{label_width}" height="{h}" fill="{LABEL_COLOR}"/>')
    parts.append(f'<rect x="{label_width}" width="{message_width}" height="{h}" fill="{fill}"/>')
    if g.gradient:
        parts.append(f'<rect width="{width}" height="{h}" fill="url(#s)"/>')
    parts.append("</g>")
    parts.append(
        f'<g fill="#fff" text-anchor="middle" font-family="{_FONT}" '
        f'text-rendering="geometricPrecision" font-size="{round(g.font_size * 10)}"'
        f"{weight}{spacing}>"
    )
    if label:
        parts.append(text(label, label_width / 2, label_text))
    parts.append(text(message, label_width + message_width / 2, message_text))
    parts.append("</g></svg>")
    return "".join(parts)


# --- months -------------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of a `YYYY-MM` month."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not a YYYY-MM month: {month!r}") from None
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)
