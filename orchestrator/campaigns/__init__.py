"""Ready-made campaigns, launched by name: ``orch launch --sites sites/ molecular-design``."""

BUILTIN_CAMPAIGNS: dict[str, str] = {
    "molecular-design": "orchestrator.campaigns.molecular_design:MolecularDesign",
    "demo": "orchestrator.campaigns.demo:DemoCampaign",
    "xtb-screen": "orchestrator.campaigns.xtb_screen:XtbScreen",
    "ip-search": "orchestrator.campaigns.ip_search:IpSearch",
}
"""Built-in campaign names and the ``module:Class`` each stands for."""

DEFAULT_CAMPAIGN = "molecular-design"
"""The flagship: what ``orch launch`` runs when no campaign is named."""
