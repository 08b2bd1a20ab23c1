"""orch: a multi-site campaign orchestrator for AI-steered science.

The thinker programming model follows Colmena's: a thinker is a class of agents that send
tasks by method name (``queues.send_inputs``) and react to results (``queues.get_result``).
"""

__version__ = "0.1.0"
