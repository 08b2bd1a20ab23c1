"""Ready-made campaigns, launched by name: ``orch launch --sites sites/ demo``."""

BUILTIN_CAMPAIGNS: dict[str, str] = {
    "demo": "orchestrator.campaigns.demo:DemoCampaign",
}
"""Built-in campaign names and the ``module:Class`` each stands for."""
