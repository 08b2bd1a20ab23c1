"""Exceptions shared by every layer of the orchestrator."""


class OrchError(Exception):
    """Base class for errors raised by orch."""


class ConfigError(OrchError):
    """A user-facing input is invalid.

    The message is one line that names the file or field and says how to fix it; the CLI
    prints it and exits with status 2.
    """


class CampaignError(OrchError):
    """The campaign's own code failed outside an agent (e.g. its constructor raised)."""


class TimeoutException(BaseException):
    """``get_result`` waited longer than its timeout (Colmena's name and base class).

    Like Colmena's, it derives from ``BaseException``, not ``Exception``: an ``except
    Exception`` around ``get_result(timeout=...)`` meant for the task's errors does not
    swallow the timeout. Catch it by name.
    """


class KillSignalException(BaseException):
    """The queues were closed by ``send_kill_signal`` (Colmena's name and base class)."""


class UnknownTopicError(OrchError, ValueError):
    """A topic that was not declared for the campaign was used."""


class UnknownMethodError(OrchError, ValueError):
    """A method name that was not registered for the campaign was used."""


class SiteUnavailableError(OrchError):
    """A site cannot take or finish tasks (unreachable service, lost workers, shut down)."""


class Halted(KeyboardInterrupt):
    """``orch halt`` stopped the campaign: the graceful stop Ctrl-C does (resumable).

    Attributes:
        user: Who asked for the halt.
    """

    def __init__(self, user: str):
        super().__init__(f"halted by {user} (orch halt)")
        self.user = user
