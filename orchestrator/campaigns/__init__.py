"""Ready-made campaigns, launched by name: ``orch launch --sites sites/ demo``."""

BUILTIN_CAMPAIGNS: dict[str, str] = {
    "demo": "orchestrator.campaigns.demo:DemoCampaign",
    "xtb-screen": "orchestrator.campaigns.xtb_screen:XtbScreen",
    "ip-search": "orchestrator.campaigns.ip_search:IpSearch",
}
"""Built-in campaign names and the ``module:Class`` each stands for."""
