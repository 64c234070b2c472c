"""Extra-network tags `<kind:name:args>` in prompts, e.g. `<hypernet:anime:0.8>` (specs §1.5).

>>> extract_networks("1girl, <hypernet:anime_3:0.6> smile")
('1girl,  smile', [NetworkTag(kind='hypernet', args=('anime_3', '0.6'))])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emaki.errors import PromptError

_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class NetworkTag:
    """One `<kind:arg:arg...>` tag: `args` split on `:`; `key=value` args are named.

    >>> tag = NetworkTag("hypernet", ("anime", "0.5", "te=2"))
    >>> tag.name, tag.multiplier, tag.positional, tag.named
    ('anime', 0.5, ('anime', '0.5'), {'te': '2'})
    >>> NetworkTag("hypernet", ("anime",)).multiplier
    1.0
    """

    kind: str
    args: tuple[str, ...]
    positional: tuple[str, ...] = field(init=False, repr=False, compare=False)
    named: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positional: list[str] = []
        named: dict[str, str] = {}
        for arg in self.args:
            pieces = arg.split("=", 2)
            if len(pieces) == 2:
                named[pieces[0]] = pieces[1]
            else:
                positional.append(arg)
        object.__setattr__(self, "positional", tuple(positional))
        object.__setattr__(self, "named", named)

    @property
    def name(self) -> str:
        """The first positional argument: the network's file stem."""
        return self.positional[0] if self.positional else ""

    @property
    def multiplier(self) -> float:
        """The second positional argument as a float; 1.0 when absent."""
        if len(self.positional) < 2:
            return 1.0
        try:
            return float(self.positional[1])
        except ValueError:
            raise PromptError(
                f"network tag {self.text!r}: strength {self.positional[1]!r} is not a number"
            ) from None

    @property
    def text(self) -> str:
        """The tag as it is written in a prompt."""
        return f"<{self.kind}:{':'.join(self.args)}>"


def extract_networks(prompt: str) -> tuple[str, list[NetworkTag]]:
    """Remove every `<kind:args>` tag from `prompt`; return the text and the tags in order.

    Tags are removed with nothing put in their place, so surrounding spaces and commas stay.

    >>> extract_networks("<hypernet:a>(x:1.2)<lora:b:1:0.5>")
    ('(x:1.2)', [NetworkTag(kind='hypernet', args=('a',)), NetworkTag(kind='lora', args=('b', '1', '0.5'))])
    """
    tags: list[NetworkTag] = []

    def take(match: re.Match[str]) -> str:
        tags.append(NetworkTag(match.group(1), tuple(match.group(2).split(":"))))
        return ""

    return _TAG.sub(take, prompt), tags
