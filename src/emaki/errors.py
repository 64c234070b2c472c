"""The one exception family: every error a user can cause is an `EmakiError`.

Messages name the file, field or token at fault and what was expected; the CLI prints them
on one line, without a traceback, and exits with `exit_code`.
"""

from __future__ import annotations


class EmakiError(Exception):
    """Base of every error emaki raises on purpose."""

    exit_code = 2


class ParamsError(EmakiError, ValueError):
    """A generation parameter is out of range or malformed (names the field)."""


class ModelLoadError(EmakiError):
    """A model file is missing, truncated, corrupt or not an SD 1.x checkpoint (names the file)."""


class UnsafeFileError(ModelLoadError):
    """A pickle asked for something outside the allowlist; nothing in it was executed."""


class PromptError(EmakiError, ValueError):
    """The prompt cannot be parsed (names the position and the offending text)."""


class SamplerError(ParamsError):
    """Unknown sampler or schedule name."""


class PolicyViolation(EmakiError):
    """The request is refused by the prompt policy (`emaki.safety`); it cannot be switched off."""

    exit_code = 3


class Interrupted(EmakiError):
    """A long run was interrupted on request, between steps."""

    exit_code = 130
